"""Rule 7 of site placement (docs/engine.md): whole groups of propagated tasks move where fewer bytes cross.

Used by :func:`.placement.assign_sites` after its per-task rules. Pure
functions over plain mappings, like :mod:`.placement`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping

Key = Hashable

#: A key used by more tasks than this crosses once whatever one group does, so
#: a move does not re-examine every group using it.
_FAN_OUT = 32

#: The group of a key that never moves (pinned by the user, a relay, unplaced).
FIXED = -1


class Groups:
    """Rule 7: move a whole group of one site's propagated tasks where fewer bytes cross.

    A group is a connected set of propagated tasks that rules 1 and 2 put in
    one site. Those rules look at a task's inputs only; a group's move also
    counts what its outputs carry back. A key costs its bytes once per site
    other than its own that uses it (relays make it cross once per site). A
    move that would change how often a key of unknown size crosses is not made.
    Groups are built from the joins of rule 2 on first use; each moves at most
    once, when the keys it touches then cost strictly less: linear in the size
    of the groups examined, nothing for a graph without a join.
    """

    def __init__(
        self,
        dependencies: Mapping[Key, Collection[Key]],
        dependents: Mapping[Key, list[Key]],
        fixed: Callable[[Key], bool],
        sites: dict[Key, str],
        nbytes: Callable[[Key], float | None],
        relays: Collection[Key],
    ) -> None:
        self.dependencies, self.dependents, self.sites = dependencies, dependents, sites
        self.fixed, self.nbytes, self.relays = fixed, nbytes, relays
        self.group_of: dict[Key, int] = {}  # FIXED for keys that never move
        self.members: list[list[Key]] = []
        self.boundary: list[dict[Key, tuple[int, bool]]] = []  # per group, see _grow
        self.frozen: set[int] = set()  # next to a relay, which goes where its consumers are
        self.users: dict[Key, dict[str, int]] = {}  # key -> site -> tasks using it there
        #: how many independent copies a group stands for; its saving is ranked per copy
        self.blocks: Callable[[list[Key]], float] = lambda members: 1.0

    def group(self, key: Key) -> int:
        """The group of a propagated key (built on first use), :data:`FIXED` for a fixed key."""
        inside = self.group_of
        g = inside.get(key)
        if g is not None:
            return g
        site = self.sites.get(key)
        if site is None or key not in self.dependencies or key in self.relays or self.fixed(key):
            inside[key] = FIXED
            return FIXED
        g = inside[key] = len(self.members)
        members, boundary = self._grow(key, g, site)
        self.members.append(members)
        self.boundary.append(boundary)
        return g

    def _grow(self, key: Key, g: int, site: str) -> tuple[list[Key], dict[Key, tuple[int, bool]]]:
        """The tasks connected to ``key`` in ``site``, and the keys they share with other tasks:
        key -> (tasks of the group using it, whether the group makes it)."""
        inside, sites, dependencies, dependents = (
            self.group_of,
            self.sites,
            self.dependencies,
            self.dependents,
        )
        fixed, relays = self.fixed, self.relays
        members, stack = [key], [key]
        boundary: dict[Key, tuple[int, bool]] = {}

        def joins(n: Key) -> bool:
            if n in inside:
                return inside[n] == g
            if relays and n in relays:
                self.frozen.add(g)
            elif sites.get(n) == site and n in dependencies and not fixed(n):
                inside[n] = g
                members.append(n)
                stack.append(n)
                return True
            return False

        while stack:
            k = stack.pop()
            for n in dependencies[k]:
                if not joins(n):
                    boundary[n] = (boundary[n][0] + 1 if n in boundary else 1, False)
            users = dependents.get(k, ())
            outside = sum(not joins(u) for u in users)
            if outside:
                boundary[k] = (len(users) - outside, True)
        return members, boundary

    def regroup(self, joins: Iterable[Key]) -> None:
        """Examine the groups of ``joins`` and of their inputs that could stop crossing.

        The groups next to the joins are examined first in the order of the
        bytes their move saves, most first: moving one side's groups a little
        at a time can end where moving the other side whole would have saved
        far more (``xr.corr`` of a series against one field: each step's mask
        saves an eighth of a step by joining the field's side, while the field's
        side joining the series moves the field once instead of every step).
        Groups next to a moved group are examined after them, in turn.
        """
        first: list[int] = []
        queued: set[int] = set()

        def push(key: Key, to: list[int] | deque[int]) -> None:
            g = self.group_of.get(key)
            if g is None:
                g = self.group(key)
            if g != FIXED and g not in queued:
                queued.add(g)
                to.append(g)

        for join in joins:
            for dep in self.dependencies[join]:
                # an input that could stop crossing: a propagated one, or one only this join uses
                if self.sites.get(dep) not in (None, self.sites[join]) and (
                    self.group(dep) != FIXED or len(self.dependents.get(dep, ())) == 1
                ):
                    push(join, first)
                    push(dep, first)
        saving = {g: self._best(g)[1] / self.blocks(self.members[g]) for g in first if g not in self.frozen}
        todo = deque(sorted(saving, key=lambda g: -saving[g]))  # stable: join order on ties
        moved: set[int] = set()
        while todo:
            g = todo.popleft()
            queued.discard(g)
            if g in moved or g in self.frozen:
                continue
            site, _ = self._best(g)
            if site is None:
                continue
            self._move(g, site)
            moved.add(g)
            for key, (_, own) in self.boundary[g].items():  # groups sharing a key with g
                if not own:
                    push(key, todo)
                users = self.dependents.get(key, ())
                for user in users if own or len(users) <= _FAN_OUT else ():
                    push(user, todo)

    def _users(self, key: Key) -> dict[str, int]:
        found = self.users.get(key)
        if found is None:
            found = self.users[key] = {}
            for user in self.dependents.get(key, ()):
                if (site := self.sites.get(user)) is not None:
                    found[site] = found.get(site, 0) + 1
        return found

    def _best(self, g: int) -> tuple[str | None, float]:
        """The site where the keys ``g`` shares cost least, if strictly less than where
        it is, and the bytes saved there."""
        here = self.sites[self.members[g][0]]
        nets = []
        now = 0.0  # bytes crossing now, unknown sizes as 1
        candidates: set[str] = set()
        for k, (n, own) in self.boundary[g].items():
            producer = None if own else self.sites.get(k)
            if own or producer is not None:  # an unpooled key is created where used (rule 3)
                users = self._users(k)
                crossings = _destinations(users, producer or here, here, here, n)
                size = self.nbytes(k)
                now += (size or 1.0) * crossings
                nets.append((size, users, n, producer, crossings))
                candidates.update(users)
                candidates.add(producer or here)
        candidates.discard(here)
        if not now or not candidates:
            return None, 0.0
        change = dict.fromkeys(candidates, 0.0)
        for size, users, n, producer, crossings in nets:
            for site in candidates:
                more = _destinations(users, producer or site, here, site, n) - crossings
                if more:
                    change[site] += math.inf if size is None else size * more
        best = min(change, key=lambda s: (change[s], s))
        return (best, -change[best]) if change[best] < -1e-9 * now else (None, 0.0)

    def _move(self, g: int, site: str) -> None:
        here = self.sites[self.members[g][0]]
        for k in self.members[g]:
            self.sites[k] = site
        for k, (n, _) in self.boundary[g].items():
            users = self.users.get(k)
            if users is not None and n:
                users[here] -= n
                users[site] = users.get(site, 0) + n


def _destinations(users: Mapping[str, int], producer: str, here: str, there: str, moving: int) -> int:
    """Sites but ``producer`` using a key once ``moving`` of its users go from ``here`` to ``there``."""
    n = 0
    for site, count in users.items():
        now = count - moving * (site == here) + moving * (site == there)
        if now > 0 and site != producer:
            n += 1
    if moving and there not in users and there != producer:
        n += 1
    return n


def spread_layers(
    dependencies: Mapping[Hashable, Collection[Hashable]],
    kept: Collection[Hashable],
    spread: Collection[Hashable],
) -> set[Hashable]:
    """Layers pinned by propagation (``spread``) that hold no user-pinned layer after fusion.

    ``dependencies`` are the layers' dependencies before fusion, ``kept`` the
    layer names after it: a layer absorbed the layers it depends on that
    fusion removed. It stays movable only if those were spread too, as a
    fused load reads its site's data and never moves.
    """
    spread, kept = set(spread), set(kept)
    out: set[Hashable] = set()
    for name in spread & kept:
        todo, absorbed = [name], set()
        while todo:
            for dep in dependencies.get(todo.pop(), ()):
                if dep not in kept and dep not in absorbed:
                    absorbed.add(dep)
                    todo.append(dep)
        if absorbed <= spread:
            out.add(name)
    return out
