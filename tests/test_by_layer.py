"""Placement a layer at a time gives what placement key by key gives.

``assign_sites(..., layers=...)`` answers rules 1 and 2 per layer (a whole
layer at once, or numpy over a join layer) and skips rule 7 when no group can
gain; these tests compare it with the per-key rules on random layered graphs
and on the hand-built graphs of tests/test_propagate.py. Where every layer is
read whole, rule 7 itself runs on layers: compared by the bytes that cross.
"""

from __future__ import annotations

import random

import pytest

from catalog_pools.engine.by_layer import _layer_of_name, _read_layers, weigh_layer
from catalog_pools.engine.parts import split_parts
from catalog_pools.engine.placement import assign_sites, dependents_of
from catalog_pools.engine.sites import OPTED_OUT, PROPAGATED

SITES = ("ecmwf", "eumetsat", "dwd")


def random_graph(seed: int) -> tuple[dict, dict, dict, list[list[str]]]:
    """Layers of keys: pinned loads, joins and chains reading earlier layers at random."""
    rng = random.Random(seed)
    deps: dict[str, set[str]] = {}
    pins: dict[str, str | None] = {}
    sizes: dict[str, float] = {}
    layers: list[list[str]] = []
    for n in range(rng.randint(3, 9)):
        width = rng.choice([1, 2, 5, 8])
        keys = [f"L{n}-{i}" for i in range(width)]
        kind = rng.random()
        for i, key in enumerate(keys):
            if not layers or kind < 0.35:  # a load layer of one site (sometimes opted out)
                deps[key] = set()
                pins[key] = None if kind < 0.03 else SITES[n % len(SITES)]
            else:
                sources = rng.sample(layers, k=min(len(layers), rng.randint(1, 3)))
                deps[key] = {rng.choice(layer) for layer in sources}
                if kind > 0.9 and i:  # keys reading keys of their own layer
                    deps[key].add(keys[i - 1])
            sizes[key] = rng.choice([0.0, 1.0, 8.0, 8.0, 100.0])
        layers.append(keys)
    return deps, pins, sizes, layers


@pytest.mark.parametrize("seed", range(300))
def test_layers_place_like_keys(seed: int) -> None:
    deps, pins, sizes, layers = random_graph(seed)
    assert assign_sites(deps, pins, sizes, layers=layers) == assign_sites(deps, pins, sizes)


def as_tuple_keys(seed: int, names_per_layer: int) -> tuple[dict, dict, dict, list[list[tuple]]]:
    """:func:`random_graph` with dask-like keys ``(name, i)``; a layer may hold several names,
    and with ``names_per_layer=0`` layers share names (then reads are found key by key)."""
    deps, pins, sizes, layers = random_graph(seed)
    rng = random.Random(seed)
    rename: dict[str, tuple] = {}
    for n, keys in enumerate(layers):
        for i, key in enumerate(keys):
            name = f"shared-{i % 2}" if names_per_layer == 0 else f"L{n}-{rng.randrange(names_per_layer)}"
            rename[key] = (name, n, i)
    new = lambda d: {rename[k]: v for k, v in d.items()}  # noqa: E731
    return (
        {rename[k]: {rename[d] for d in ds} for k, ds in deps.items()},
        new(pins),
        new(sizes),
        [[rename[k] for k in keys] for keys in layers],
    )


@pytest.mark.parametrize("names_per_layer", [0, 1, 3])
@pytest.mark.parametrize("seed", range(150))
def test_layers_read_by_name_are_layers_read_by_key(seed: int, names_per_layer: int) -> None:
    """Which layers each layer reads, found from key names (a closed graph) or key by key: the same."""
    deps, pins, sizes, layers = as_tuple_keys(seed, names_per_layer)
    assert _layer_of_name(layers) is None or names_per_layer > 0
    assert _read_layers(layers, deps, pins, closed=True) == _read_layers(layers, deps, pins, closed=False)
    assert assign_sites(deps, pins, sizes, layers=layers, closed=True) == assign_sites(deps, pins, sizes)


@pytest.mark.parametrize("seed", range(100))
def test_layers_place_like_keys_with_movable_pins(seed: int) -> None:
    deps, pins, sizes, layers = random_graph(seed)
    movable = set(random.Random(seed).sample(sorted(pins), k=len(pins) // 2))
    by_key = assign_sites(deps, pins, sizes, movable_pins=movable.__contains__)
    assert assign_sites(deps, pins, sizes, layers=layers, movable_pins=movable.__contains__) == by_key


def test_weighing_a_layer_follows_rule_2() -> None:
    """Bytes over users, ties to the smallest name, a site no input is in never wins."""
    deps = {"j0": {"a0", "c"}, "j1": {"a1", "c"}, "j2": {"b0"}, "j3": {"a2", "b1"}}
    sites = {"a0": "zeta", "a1": "zeta", "a2": "zeta", "c": "alpha", "b0": "beta", "b1": "beta"}
    sizes = {"a0": 4.0, "a1": 1.0, "a2": 8.0, "c": 6.0, "b0": 0.0, "b1": 8.0}
    joins: list[str] = []
    dependents = dependents_of(deps)
    chosen = weigh_layer(list(deps), deps, dependents, sites, lambda k: sizes[k] or 1.0, joins)
    # c is read by two tasks: 3 bytes each; a0 4 > 3, a1 1 < 3; b0 alone; a tie goes to beta
    assert chosen == ["zeta", "alpha", "beta", "beta"]
    assert joins == ["j0", "j1", "j3"]


@pytest.mark.parametrize("seed", range(50))
def test_parts_by_layer_are_parts_by_key(seed: int) -> None:
    deps, pins, sizes, layers = random_graph(seed)
    sites = assign_sites(deps, pins, sizes)
    graph = {k: f"task {k}" for k in deps}

    def where(key: str) -> tuple[str | None, str | None]:
        if key in pins:
            return sites.get(key), (None if pins[key] is not None else OPTED_OUT)
        return sites.get(key), PROPAGATED

    by_layer = split_parts(graph, deps, where, layers=layers, pins=pins, sites=sites)
    by_key = split_parts(graph, deps, where, layers=None, pins=pins, sites=sites)
    assert by_layer == by_key


def broadcast_graph(steps: int = 6) -> tuple[dict, dict, dict, list[list[str]]]:
    """A series at ecmwf joined, step by step, with one field at dwd broadcast to every step.

    ``c`` (one field) -> ``bc`` (one broadcast chunk, all steps) -> ``cs-i`` (step i of it);
    ``j-i`` joins ``a-i`` with ``cs-i``; ``m`` reduces the joins.
    """
    deps: dict[str, set[str]] = {"c": set(), "bc": {"c"}}
    pins: dict[str, str | None] = {"c": "dwd"}
    sizes: dict[str, float] = {"c": 100.0, "bc": 100.0 * steps}
    layers: list[list[str]] = [["c"], ["bc"], [], [], [], ["m"]]
    for i in range(steps):
        deps[f"a-{i}"], pins[f"a-{i}"], sizes[f"a-{i}"] = set(), "ecmwf", 100.0
        deps[f"cs-{i}"], sizes[f"cs-{i}"] = {"bc"}, 100.0
        deps[f"j-{i}"], sizes[f"j-{i}"] = {f"a-{i}", f"cs-{i}"}, 100.0
        for layer, key in zip(layers[2:5], (f"a-{i}", f"cs-{i}", f"j-{i}"), strict=True):
            layer.append(key)
    deps["m"], sizes["m"] = {f"j-{i}" for i in range(steps)}, 8.0
    return deps, pins, sizes, layers


def test_a_field_broadcast_to_every_step_moves_once() -> None:
    """Each join weighs one step of the broadcast field like one step of the series (a tie);
    moving the field's side moves the field once. Rule 7 must not be skipped here."""
    deps, pins, sizes, layers = broadcast_graph()
    by_key = assign_sites(deps, pins, sizes)
    assert assign_sites(deps, pins, sizes, layers=layers) == by_key
    assert {by_key[f"j-{i}"] for i in range(6)} == {"ecmwf"}
    assert by_key["bc"] == "ecmwf" and by_key["m"] == "ecmwf"


def blockwise_graph(seed: int) -> tuple[dict, dict, dict, list[list[str]]]:
    """Layers of ``n`` blocks, every layer read whole: loads, elementwise maps and joins
    (block ``i`` reads block ``i``, maybe with a one-block layer broadcast), reductions."""
    rng = random.Random(seed)
    n = rng.choice([2, 3, 6])
    deps: dict[str, set[str]] = {}
    pins: dict[str, str | None] = {}
    sizes: dict[str, float] = {}
    layers: list[list[str]] = []
    for m in range(rng.randint(3, 10)):
        kind = rng.random()
        wide = [layer for layer in layers if len(layer) == n]
        one = [layer for layer in layers if len(layer) == 1]
        if kind < 0.3 or not wide:
            keys = [f"L{m}-{i}" for i in range(n if rng.random() < 0.8 else 1)]
            site = rng.choice(SITES)
            for key in keys:
                deps[key], pins[key] = set(), site
        elif kind < 0.8:
            sources = rng.sample(wide, k=min(len(wide), rng.randint(1, 3)))
            extra = [rng.choice(one)[0]] if one and rng.random() < 0.4 else []
            keys = [f"L{m}-{i}" for i in range(n)]
            for i, key in enumerate(keys):
                deps[key] = {source[i] for source in sources} | set(extra)
        else:
            keys = [f"L{m}-0"]
            deps[keys[0]] = set(rng.choice(wide))
        scale = rng.choice([1.0, 8.0, 100.0])
        for key in keys:
            sizes[key] = scale * (n if len(keys) == 1 and rng.random() < 0.3 else 1)
        layers.append(keys)
    return deps, pins, sizes, layers


def crossing_bytes(deps: dict, sites: dict, sizes: dict) -> float:
    """Each key's bytes once per site other than its own that uses it."""
    users = dependents_of(deps)
    return sum(sizes[k] * len({sites.get(u) for u in us} - {None, sites.get(k)}) for k, us in users.items())


@pytest.mark.parametrize("spread", [False, True])
def test_rule_7_by_layer_moves_fewer_bytes_than_key_by_key(
    monkeypatch: pytest.MonkeyPatch, spread: bool
) -> None:
    """Where every layer is read whole, rule 7 runs on layers (:mod:`.layer_groups`):
    blocks of a layer move together, so it may move more at once than key by key does.
    Both are greedy: on 80,000 such graphs by layer crossed fewer bytes in 844, more in 3.
    With pins the optimizer spread (``spread``: some pinned layers movable whole, some
    in part, which leaves the graph to key by key), the same holds."""
    from catalog_pools.engine import by_layer

    answered: list[bool] = []
    original = by_layer._rule_7_by_layer

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        answered.append(original(*args, **kwargs))
        return answered[-1]

    monkeypatch.setattr(by_layer, "_rule_7_by_layer", spy)
    by_layer_used = fewer = more = 0
    total = total_by_key = 0.0
    for seed in range(1000):
        deps, pins, sizes, layers = blockwise_graph(seed)
        movable: set[str] = set()
        if spread:
            rng = random.Random(seed)
            for layer in (layer for layer in layers if layer[0] in pins):
                draw = rng.random()
                movable.update(layer if draw < 0.4 else layer[:1] if draw < 0.5 else [])
        answered.clear()
        layered = assign_sites(deps, pins, sizes, layers=layers, movable_pins=movable.__contains__)
        by_key = assign_sites(deps, pins, sizes, movable_pins=movable.__contains__)
        if not any(answered):
            assert layered == by_key
            continue
        by_layer_used += 1
        moved, moved_by_key = crossing_bytes(deps, layered, sizes), crossing_bytes(deps, by_key, sizes)
        fewer += moved < moved_by_key
        more += moved > moved_by_key
        total, total_by_key = total + moved, total_by_key + moved_by_key
    assert by_layer_used > 200
    assert total < total_by_key and fewer > 10 * more


def test_groups_of_blocks_are_ranked_per_block() -> None:
    """A layer of three blocks that do not touch (each saving 2 bytes by moving) ranks
    as three groups of 2, not one of 6, against a group joined through a reduction
    (saving 3): ranked as one, it moved first and 24 bytes crossed where 3 do."""
    deps, pins, sizes, layers = blockwise_graph(17990)
    by_key = assign_sites(deps, pins, sizes)
    layered = assign_sites(deps, pins, sizes, layers=layers)
    assert layered == by_key
    assert crossing_bytes(deps, layered, sizes) == 3.0


def test_sizes_of_many_blocks_are_their_sizes_one_by_one() -> None:
    """``LayerInfo.nbytes_many`` (used to weigh a join layer) agrees with ``nbytes`` key by key."""
    import dask.array as da

    from catalog_pools.engine.layers import LayerInfo
    from catalog_pools.engine.placement import _size_function

    even = da.ones((6, 4), chunks=(2, 4))
    uneven = da.ones((5, 4), chunks=(2, 4))  # a last chunk of another size
    zero = da.ones((0, 4), chunks=(2, 4))
    info = LayerInfo({**even.dask.layers, **uneven.dask.layers, **zero.dask.layers})
    size = _size_function(info.nbytes, 1.0)
    for keys in (
        list(even.__dask_keys__()[0][0:1]) + [k[0] for k in even.__dask_keys__()],
        [k[0] for k in even.__dask_keys__()] + [k[0] for k in uneven.__dask_keys__()],
        [(even.name, 0)],  # a key with fewer indices than the layer's blocks
        ["not-a-tuple"],
    ):
        assert size.many(keys) == [size(k) for k in keys]
    evens = [k[0] for k in even.__dask_keys__()]
    assert info.nbytes_many(evens) == [2 * 4 * 8.0] * 3
    assert info.nbytes_many([k[0] for k in uneven.__dask_keys__()]) is None
