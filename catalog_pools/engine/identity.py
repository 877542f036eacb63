"""Site identity: a worker may serve a site only if its certificate says so.

With TLS, every process presents a certificate signed by the cluster's CA. A
site's workers get a certificate naming the site, as URI ``site:<site>`` in the
subject alternative name (or ``CN=site:<site>``). :class:`SiteIdentityPlugin`
runs on the scheduler and refuses any worker that claims a ``pool-<site>``
resource its certificate does not name, at registration and on every later
resource change (``set_resources``, heartbeats), and logs why. Without it, any
process holding any valid certificate could declare ``--resources
"pool-ecmwf=1"`` and be sent ECMWF's loads, with the credentials inside them.

Load it on the scheduler with ``dask scheduler --preload catalog_pools.engine.identity``
(``LocalSitesCluster(..., security=True)`` does). Refusals are logged on the
scheduler and recorded as events under the topic :data:`EVENT_TOPIC`
(``client.get_events("catalog-pools-identity")``).
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from .sites import sites_of_resources, validate_site

logger = logging.getLogger(__name__)

__all__ = [
    "EVENT_TOPIC",
    "PLUGIN_NAME",
    "SiteIdentityPlugin",
    "certificate_sites",
    "peer_sites",
    "site_identity",
    "worker_certified_sites",
]

#: Prefix of a site identity in a certificate (SAN URI or common name).
SITE_SCHEME = "site:"
PLUGIN_NAME = "catalog-pools-identity"
EVENT_TOPIC = "catalog-pools-identity"


def site_identity(site: str) -> str:
    """What a certificate of ``site`` carries (``site:<site>``), as SAN URI and CN."""
    return SITE_SCHEME + validate_site(site)


def _sites_in(names: Iterable[str]) -> frozenset[str]:
    return frozenset(n[len(SITE_SCHEME) :] for n in names if n.startswith(SITE_SCHEME) and n != SITE_SCHEME)


def peer_sites(peercert: Mapping[str, Any] | None) -> frozenset[str] | None:
    """Sites named by a peer certificate as :meth:`ssl.SSLSocket.getpeercert` decodes it.

    ``None`` when there is no verified certificate (plain TCP).
    """
    if not peercert:
        return None
    names = [v for kind, v in peercert.get("subjectAltName", ()) if kind == "URI"]
    names += [v for rdn in peercert.get("subject", ()) for k, v in rdn if k == "commonName"]
    return _sites_in(names)


@functools.lru_cache(maxsize=32)
def certificate_sites(cert: str) -> frozenset[str]:
    """Sites named by a PEM certificate (a file path or the PEM text itself)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    data = cert.encode() if "-----BEGIN" in cert else open(cert, "rb").read()  # noqa: SIM115
    parsed = x509.load_pem_x509_certificate(data)
    names = [str(a.value) for a in parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        pass
    return _sites_in(names)


def worker_certified_sites(worker: Any) -> frozenset[str] | None:
    """Sites the certificate of a running ``distributed.Worker`` names; ``None`` without TLS."""
    security = getattr(worker, "security", None)
    cert = getattr(security, "tls_worker_cert", None)
    return certificate_sites(cert) if cert else None


Handler = Callable[..., Any]


class SiteIdentityPlugin(SchedulerPlugin):
    """Refuse workers whose claimed ``pool-<site>`` their certificate does not name.

    Parameters
    ----------
    require_certificate
        Also refuse a site claim made over a connection without a verified
        certificate (plain TCP). Workers claiming no site are always let in.

    Attributes
    ----------
    refused
        One dict per refusal: ``address``, ``name``, ``claimed``, ``certified``, ``reason``.
    certified
        Address of each admitted worker -> sites its certificate names.
    """

    name = PLUGIN_NAME

    def __init__(self, require_certificate: bool = True) -> None:
        self.require_certificate = require_certificate
        self.refused: list[dict[str, Any]] = []
        self.certified: dict[str, frozenset[str] | None] = {}
        self.scheduler: Any = None

    def verdict(self, certified: frozenset[str] | None, resources: Mapping[str, Any] | None) -> str | None:
        """Why a peer with certificate sites ``certified`` may not hold ``resources``; ``None`` if it may."""
        claimed = set(sites_of_resources(resources))
        if not claimed:
            return None
        if certified is None:
            if not self.require_certificate:
                return None
            return f"it claims site(s) {sorted(claimed)} without a TLS certificate"
        foreign = claimed - certified
        if foreign:
            named = ", ".join(sorted(certified)) or "no site"
            return f"it claims site(s) {sorted(foreign)} but its certificate is for {named}"
        return None

    def _refuse(self, address: str, name: Any, resources: Any, certified: Any, reason: str) -> None:
        entry = {
            "address": address,
            "name": str(name),
            "claimed": sites_of_resources(resources),
            "certified": sorted(certified or ()),
            "reason": reason,
        }
        self.refused.append(entry)
        logger.warning("refused worker %s (name %s): %s", address, name, reason)
        if self.scheduler is not None:
            self.scheduler.log_event(EVENT_TOPIC, {"action": "refused", **entry})

    async def start(self, scheduler: Any) -> None:
        """Guard the scheduler's handlers, and check workers that joined before we did."""
        self.scheduler = scheduler
        handlers = scheduler.handlers
        if getattr(handlers["register-worker"], "_site_identity", False):
            return
        handlers["register-worker"] = self._guard_register(handlers["register-worker"])
        for op in ("set_resources", "heartbeat_worker"):
            handlers[op] = self._guard_resources(handlers[op])
        for address, ws in list(scheduler.workers.items()):
            from .._compat.distributed_internals import worker_stream_comm

            comm = worker_stream_comm(scheduler, address)
            certified = peer_sites(getattr(comm, "extra_info", {}).get("peercert"))
            reason = self.verdict(certified, ws.resources)
            if reason is None:
                self.certified[address] = certified
            else:
                self._refuse(address, ws.name, ws.resources, certified, reason)
                await scheduler.remove_worker(address, stimulus_id="catalog-pools-identity", close=True)

    def _normalize(self, address: str) -> str:
        """The address as the scheduler keys its workers (``Scheduler.coerce_address``)."""
        try:
            return str(self.scheduler.coerce_address(address))
        except Exception:
            return address

    def _guard_register(self, original: Handler) -> Handler:
        async def register_worker(comm: Any, **msg: Any) -> Any:
            certified = peer_sites(comm.extra_info.get("peercert"))
            reason = self.verdict(certified, msg.get("resources"))
            if reason is not None:
                self._refuse(
                    msg.get("address", "?"), msg.get("name"), msg.get("resources"), certified, reason
                )
                # The shape of distributed's own refusal ("name taken"): workers read "time".
                reply = {
                    "status": "error",
                    "message": f"refused by catalog_pools: {reason}",
                    "time": time.time(),
                }
                await comm.write(reply)
                await comm.close()
                return None
            self.certified[self._normalize(msg.get("address", ""))] = certified
            return await original(comm, **msg)

        register_worker._site_identity = True  # type: ignore[attr-defined]
        return register_worker

    def _guard_resources(self, original: Handler) -> Handler:
        def guarded(comm: Any, **msg: Any) -> Any | Awaitable[Any]:
            resources = msg.get("resources")
            if resources:
                address = self._normalize(msg.get("worker") or msg.get("address", "?"))
                # Both the caller and the worker being changed must be certified for the sites.
                certified = peer_sites(comm.extra_info.get("peercert"))
                owner = self.certified.get(address)
                reason = self.verdict(certified, resources) or self.verdict(owner, resources)
                if reason is not None:
                    self._refuse(address, "?", resources, certified, f"resource change refused: {reason}")
                    raise PermissionError(f"refused by catalog_pools: {reason}")
            return original(comm, **msg) if expects_comm else original(**msg)

        expects_comm = next(iter(inspect.signature(original).parameters), None) == "comm"

        return guarded

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        """Forget a worker's certificate."""
        self.certified.pop(worker, None)


def dask_setup(scheduler: Any) -> None:
    """``dask scheduler --preload catalog_pools.engine.identity``: install the plugin.

    The scheduler starts it right after its preloads; workers that registered
    in between are checked then.
    """
    scheduler.add_plugin(SiteIdentityPlugin(), name=PLUGIN_NAME, idempotent=True)
    logger.info("site identity enforced on scheduler %s", scheduler.address)
