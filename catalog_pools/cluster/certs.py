"""Certificates for a local multi-site cluster: one CA, one certificate per site.

:func:`write_site_certificates` makes, with ``cryptography`` (no ``openssl``
process), a CA and certificates for the scheduler, the client and every site,
each site's naming it as ``site:<site>`` (SAN URI and common name, see
:func:`catalog_pools.engine.identity.site_identity`). The CA's private key is
never written: nobody can mint another certificate. Layout::

    <dir>/ca.pem                    CA certificate, 0644
    <dir>/scheduler/{cert,key}.pem  directory 0700, key 0600 (the caller's user)
    <dir>/client/{cert,key}.pem     the same
    <dir>/site-<site>/{cert,key}.pem directory 0700 and key 0600 owned by the
                                    site's Unix user when it has one
"""

from __future__ import annotations

import datetime
import os
import pwd
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.identity import site_identity

if TYPE_CHECKING:
    from distributed import Security

__all__ = ["CertFiles", "issue_certificate", "make_ca", "security_files", "write_site_certificates"]

_VALID_DAYS = 7


@dataclass(frozen=True)
class CertFiles:
    """Paths of one process's TLS files."""

    ca: str
    cert: str
    key: str

    def cli_args(self) -> list[str]:
        """``dask scheduler`` / ``dask worker`` arguments using these files."""
        return ["--tls-ca-file", self.ca, "--tls-cert", self.cert, "--tls-key", self.key]


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "catalog_pools local cluster"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(subject: Any, issuer: Any, public_key: Any) -> Any:
    from cryptography import x509

    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def make_ca(common_name: str = "catalog_pools local CA") -> tuple[Any, Any]:
    """A new CA: ``(private key, certificate)`` (``cryptography`` objects, in memory)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_certificate(ca: tuple[Any, Any], common_name: str, uris: Iterable[str] = ()) -> tuple[Any, Any]:
    """A key and a certificate signed by ``ca``, good for TLS server and client use.

    Parameters
    ----------
    ca
        ``(key, certificate)`` from :func:`make_ca`.
    common_name
        Subject CN, e.g. ``site:ecmwf``.
    uris
        Subject alternative name URIs, e.g. ``["site:ecmwf"]``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName("localhost"), *(x509.UniformResourceIdentifier(u) for u in uris)]
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        _builder(_name(common_name), ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write_new(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    """Create ``path`` with ``mode`` from the start (no moment with wider access)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)  # the umask may have narrowed it
        os.write(fd, data)
    finally:
        os.close(fd)


def _write_pair(directory: Path, pair: tuple[Any, Any], ca: str, user: str | None) -> CertFiles:
    from cryptography.hazmat.primitives import serialization

    owner = None
    if user is not None:
        pw = pwd.getpwnam(user)
        owner = (pw.pw_uid, pw.pw_gid)
    directory.mkdir(mode=0o700)
    if owner is not None:
        os.chown(directory, *owner)
    directory.chmod(0o700)
    key, cert = pair
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_new(directory / "key.pem", key_pem, 0o600, owner)
    _write_new(directory / "cert.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644, owner)
    return CertFiles(ca=ca, cert=str(directory / "cert.pem"), key=str(directory / "key.pem"))


def write_site_certificates(
    directory: Path, sites: Iterable[str], users: Mapping[str, str] | None = None
) -> dict[str, CertFiles]:
    """Write a CA certificate and certificates for the scheduler, the client and each site.

    Parameters
    ----------
    directory
        A new directory (it must not exist); made mode 0755 so site users can
        enter it, while each certificate's own directory is 0700.
    sites
        Site names; each gets ``site-<site>/`` with a certificate naming it.
    users
        Unix user per site: owner of that site's directory and key.

    Returns
    -------
    dict
        ``"scheduler"``, ``"client"`` and ``"site:<site>"`` -> :class:`CertFiles`.
    """
    from cryptography.hazmat.primitives import serialization

    users = dict(users or {})
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    ca = make_ca()
    ca_path = directory / "ca.pem"
    _write_new(ca_path, ca[1].public_bytes(serialization.Encoding.PEM), 0o644, None)
    out = {
        "scheduler": _write_pair(
            directory / "scheduler", issue_certificate(ca, "catalog_pools scheduler"), str(ca_path), None
        ),
        "client": _write_pair(
            directory / "client", issue_certificate(ca, "catalog_pools client"), str(ca_path), None
        ),
    }
    for site in sites:
        ident = site_identity(site)
        pair = issue_certificate(ca, ident, [ident])
        out[ident] = _write_pair(directory / f"site-{site}", pair, str(ca_path), users.get(site))
    return out


def security_files(directory: Path, security: Security, user: str | None = None) -> CertFiles:
    """Files for the CLI processes from a user's ``distributed.Security`` (one certificate for all).

    Certificates given as PEM text are written to ``directory`` (mode 0700, owned
    by ``user`` if given; keys 0600); paths are used as they are.
    """
    owner = None
    if user is not None:
        pw = pwd.getpwnam(user)
        owner = (pw.pw_uid, pw.pw_gid)
    directory.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    directory.mkdir(mode=0o700)
    if owner is not None:
        os.chown(directory, *owner)

    def as_file(value: str | None, fname: str, mode: int) -> str | None:
        if value is None or "-----BEGIN" not in value:
            return value
        path = directory / fname
        _write_new(path, value.encode(), mode, owner)
        return str(path)

    def first(*names: str) -> str | None:
        return next((v for v in (getattr(security, n, None) for n in names) if v), None)

    ca = as_file(first("tls_ca_file"), "ca.pem", 0o644)
    cert = as_file(first("tls_worker_cert", "tls_scheduler_cert", "tls_client_cert"), "cert.pem", 0o644)
    key = as_file(first("tls_worker_key", "tls_scheduler_key", "tls_client_key"), "key.pem", 0o600)
    if not (ca and cert):
        raise ValueError("security must give at least tls_ca_file and a certificate")
    # The key may be inside the certificate file.
    return CertFiles(ca=ca, cert=cert, key=key or cert)
