"""Artifacts on disk: safetensors for tensors, a JSON sidecar for everything else.

Every artifact is a pair ``NAME.safetensors`` + ``NAME.json``. The JSON holds the config that made
the tensors, the ddnb version, the seed, and the sha256 of the tensor file; the tensor file's own
header holds the sha256 of the config, so editing either file is detected on load. Writes are atomic
(temporary file, fsync, rename; tensors first, JSON last), so a killed process never leaves a file
that looks complete. Nothing is ever unpickled.

``Store`` keys artifacts by a hash of ``(kind, config)`` so a rerun with the same config finds its
result instead of recomputing it. The config says what went in, not what the code did with it, so each kind
also has a version (``VERSIONS``): an artifact made by an older version of its kind is remade, not served.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save as safetensors_bytes

from ddnb import __version__
from ddnb.errors import DdnbError

FORMAT = "ddnb-artifact/1"
SUFFIX = ".safetensors"

# What each kind of artifact holds, by version. Bump a kind's number with any change to ddnb that alters what
# it stores for the same config (a fixed bug, a changed algorithm or default): the store then remakes that
# kind's old artifacts instead of serving them. Results made from a set key it by its fingerprint, so a remade
# set is followed by remade results; sets, experts, pools and real-trained models key the data by its config,
# not its pixels, so a change to the decoded data ("dataset") needs those kinds bumped with it. Unlisted kinds,
# and sidecars without a version, are 1.
VERSIONS: dict[str, int] = {
    "dataset": 1,  # decoded pixels (ddnb.data.sources)
    "distilled": 1, "checkpoint": 1, "expert": 1,  # ddnb.distill; a checkpoint moves with its set's version
    "pool-subset": 1, "pool-early": 1, "curvature": 1,  # ddnb.analysis.dynamics, curvature
    "evaluation": 1, "mixing": 1, "model": 1,  # ddnb.analysis.substitution
    "influence": 1, "influence-agreement": 1,  # ddnb.analysis.influence
    "notebook": 1,  # ddnb.book: an executed notebook (its key already holds the hash of ddnb's source)
}


def kind_version(kind: str) -> int:
    """The version of ``kind`` this ddnb makes (``VERSIONS``; 1 when unlisted)."""
    return VERSIONS.get(kind, 1)


def _made_by(sidecar: dict[str, Any]) -> int:
    """The version of its kind an artifact was made by (1 for sidecars written before kinds had versions)."""
    return sidecar.get("version", 1)


def _stale(sidecar: dict[str, Any]) -> bool:
    return _made_by(sidecar) != kind_version(sidecar["kind"])


@dataclass
class Artifact:
    """Tensors plus the config that made them and free-form metadata (JSON-serialisable)."""

    tensors: dict[str, torch.Tensor]
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    kind: str | None = None


def canonical_json(value: Any) -> str:
    """Deterministic JSON text (sorted keys, no spaces) used for hashing configs."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def config_key(kind: str, config: dict[str, Any]) -> str:
    """16 hex digits identifying ``(kind, config)``."""
    return hashlib.sha256(canonical_json({"kind": kind, "config": config}).encode()).hexdigest()[:16]


def fingerprint(tensor: torch.Tensor) -> str:
    """16 hex digits of the sha256 of a tensor's bytes: identifies data (a set's images) inside a config."""
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def artifact_path(path: str | Path) -> Path:
    """Normalise a user path to the ``.safetensors`` file of an artifact."""
    path = Path(path)
    return path if path.suffix == SUFFIX else path.with_name(path.name + SUFFIX)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_artifact(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    meta: dict[str, Any] | None = None,
    kind: str = "artifact",
    cost: dict[str, float] | None = None,
) -> Path:
    """Write ``tensors`` and their sidecar atomically; returns the ``.safetensors`` path. ``cost`` (seconds it
    took to make, e.g. ``{"wall_s": 12.5, "cpu_s": 24.1}``) is recorded in the sidecar, outside the config."""
    path = artifact_path(path)
    config_hash = hashlib.sha256(canonical_json(config).encode()).hexdigest()
    payload = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    data = safetensors_bytes(payload, metadata={"format": FORMAT, "config_sha256": config_hash})
    sidecar = {
        "format": FORMAT,
        "kind": kind,
        "config": json.loads(canonical_json(config)),
        "meta": json.loads(canonical_json(meta or {})),
        "seed": config.get("seed"),
        "version": kind_version(kind),
        "ddnb_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if cost is not None:
        sidecar["cost"] = {name: round(value, 3) for name, value in cost.items()}
    _sidecar(path).unlink(missing_ok=True)  # an old sidecar must never vouch for new tensors
    _atomic_write(path, data)
    _atomic_write(_sidecar(path), json.dumps(sidecar, indent=1, sort_keys=True).encode())
    return path


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of an artifact, without loading or verifying tensors."""
    path = artifact_path(path)
    if not path.exists():
        raise DdnbError(f"no artifact at {path}")
    if not _sidecar(path).exists():
        raise DdnbError(f"{path} has no sidecar {_sidecar(path).name}: incomplete artifact, not used")
    try:
        sidecar = json.loads(_sidecar(path).read_text())
    except json.JSONDecodeError as error:
        raise DdnbError(f"{_sidecar(path)} is not valid JSON ({error}): corrupt artifact, not used") from None
    if sidecar.get("format") != FORMAT:
        raise DdnbError(f"{_sidecar(path)} is not a ddnb artifact sidecar")
    return sidecar


def load_artifact(path: str | Path, device: torch.device | str = "cpu") -> Artifact:
    """Load and verify an artifact; a corrupt or tampered pair raises ``DdnbError``."""
    path = artifact_path(path)
    sidecar = read_sidecar(path)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sidecar["sha256"]:
        raise DdnbError(f"{path} does not match the checksum in its sidecar: corrupt or modified, not used")
    config_hash = hashlib.sha256(canonical_json(sidecar["config"]).encode()).hexdigest()
    try:
        tensors = load_file(path, device=str(device))
        header = _safetensors_metadata(data)
    except (SafetensorError, ValueError) as error:
        raise DdnbError(f"{path} is not a readable safetensors file ({error})") from None
    if header.get("config_sha256") != config_hash:
        raise DdnbError(f"the config in {_sidecar(path)} was modified after the tensors were written; not used")
    return Artifact(tensors, sidecar["config"], sidecar["meta"], path, sidecar["kind"])


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    header_length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + header_length]).get("__metadata__", {})


def default_root() -> Path:
    """``$DDNB_STORE``, else ``$XDG_CACHE_HOME/ddnb``, else ``~/.cache/ddnb``."""
    if os.environ.get("DDNB_STORE"):
        return Path(os.environ["DDNB_STORE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ddnb"


def total_costs(rows: list[dict[str, Any]], group: Callable[[dict[str, Any]], Any]) -> dict[Any, dict[str, float]]:
    """Cost rows (``Store.costs``, or rows with ``wall_s`` and ``cpu_s``) summed by ``group(row)``:
    ``{group: {"count", "wall_s", "cpu_s"}}``, in order of first appearance."""
    totals: dict[Any, dict[str, float]] = {}
    for row in rows:
        total = totals.setdefault(group(row), {"count": 0, "wall_s": 0.0, "cpu_s": 0.0})
        total["count"] += 1
        total["wall_s"] += row["wall_s"]
        total["cpu_s"] += row["cpu_s"]
    return totals


class Store:
    """A folder of artifacts keyed by ``(kind, config)``: ``ROOT/KIND/KEY.safetensors`` + ``.json``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()

    def path(self, kind: str, config: dict[str, Any]) -> Path:
        """Where the artifact for ``(kind, config)`` lives (whether or not it exists)."""
        return self.root / kind / (config_key(kind, config) + SUFFIX)

    def exists(self, kind: str, config: dict[str, Any]) -> bool:
        """True when a complete artifact (tensors and sidecar) of the current version of ``kind`` exists for
        ``(kind, config)``; one made by another version does not count (``get_or_make`` replaces it)."""
        path = self.path(kind, config)
        if not (path.exists() and _sidecar(path).exists()):
            return False
        try:
            return not _stale(read_sidecar(path))
        except DdnbError:
            return False  # unreadable: made again, and the new one replaces it

    def save(self, kind: str, config: dict[str, Any], tensors: dict[str, torch.Tensor], meta: dict | None = None,
             cost: dict[str, float] | None = None) -> Path:
        """Write the artifact for ``(kind, config)``, replacing any previous one."""
        return save_artifact(self.path(kind, config), tensors, config, meta, kind, cost)

    def load(self, kind: str, config: dict[str, Any], device: torch.device | str = "cpu") -> Artifact:
        """Load and verify the artifact for ``(kind, config)``."""
        return load_artifact(self.path(kind, config), device)

    def get_or_make(
        self, kind: str, config: dict[str, Any], make: Callable[[], tuple[dict[str, torch.Tensor], dict]]
    ) -> Artifact:
        """Load the artifact if it exists, else call ``make() -> (tensors, meta)``, save and return it. The
        sidecar records what the call cost (``cost``: wall and process CPU seconds), which ``costs`` sums up,
        e.g. to see where a book's build time went. A ``make`` that resumed the checkpointed work of earlier,
        interrupted attempts names that work in ``meta["earlier_cost"]`` (same keys); it is added, so a resumed
        job's cost is all the work kept in it (work after its last checkpoint was redone, and counts once)."""
        if self.exists(kind, config):
            return self.load(kind, config)
        wall, cpu = time.perf_counter(), time.process_time()
        tensors, meta = make()
        earlier = meta.get("earlier_cost", {})
        cost = {"wall_s": time.perf_counter() - wall + earlier.get("wall_s", 0.0),
                "cpu_s": time.process_time() - cpu + earlier.get("cpu_s", 0.0)}
        path = self.save(kind, config, tensors, meta, cost)
        return Artifact(tensors, json.loads(canonical_json(config)), json.loads(canonical_json(meta)), path, kind)

    def add(self, path: str | Path) -> Path:
        """Put an artifact file written elsewhere (another machine's store, a set kept in a repository) into this
        store under its own kind and config, checksums verified, so that work which made it is not repeated.
        Returns where it now lives; an artifact already there is left as it is. One made by another version of
        its kind is refused (``DdnbError``): this ddnb would make it again rather than use it."""
        artifact = load_artifact(path)
        sidecar = read_sidecar(path)
        if _stale(sidecar):
            raise DdnbError(f"{artifact_path(path)} holds version {_made_by(sidecar)} of {artifact.kind!r} and this ddnb makes "
                            f"version {kind_version(artifact.kind)}: not added, it would be made again anyway")
        target = self.path(artifact.kind, artifact.config)
        if not self.exists(artifact.kind, artifact.config):
            target.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(target, artifact_path(path).read_bytes())
            _atomic_write(_sidecar(target), _sidecar(artifact_path(path)).read_bytes())
        return target

    def sidecars(self, kind: str = "*") -> list[tuple[Path, dict[str, Any]]]:
        """``(tensor file path, sidecar)`` of every artifact of ``kind`` (default all) whose sidecar is readable."""
        found = []
        for sidecar_path in sorted(self.root.glob(f"{kind}/*.json")):
            try:
                sidecar = json.loads(sidecar_path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if sidecar.get("format") == FORMAT:
                found.append((sidecar_path.with_suffix(SUFFIX), sidecar))
        return found

    def costs(self) -> list[dict[str, Any]]:
        """One row per artifact in the store that recorded its cost: ``kind``, ``path``, ``created`` (UTC),
        ``wall_s`` and ``cpu_s`` (seconds; an artifact made inside another's job counts in both)."""
        return [{"kind": sidecar["kind"], "path": str(path), "created": sidecar["created"], **sidecar["cost"]}
                for path, sidecar in self.sidecars() if "cost" in sidecar]

    def listing(self) -> list[dict[str, Any]]:
        """One row per artifact: ``kind``, ``path``, ``created`` (UTC), ``bytes`` (tensors and sidecar),
        ``wall_s`` (what making it took; 0 when not recorded) and ``stale`` (made by another version of its kind)."""
        return [{"kind": sidecar["kind"], "path": path, "created": sidecar["created"],
                 "bytes": (path.stat().st_size if path.exists() else 0) + _sidecar(path).stat().st_size,
                 "wall_s": sidecar.get("cost", {}).get("wall_s", 0.0),
                 "stale": _stale(sidecar)}
                for path, sidecar in self.sidecars()]

    def prune(self) -> list[Path]:
        """Delete the artifacts made by another version of their kind (they would be made again, never served);
        returns their paths."""
        stale = [row["path"] for row in self.listing() if row["stale"]]
        for path in stale:
            _sidecar(path).unlink(missing_ok=True)  # sidecar first: a half-removed artifact never looks complete
            path.unlink(missing_ok=True)
        return stale

    def remove(self, kind: str, config: dict[str, Any]) -> None:
        """Delete the artifact for ``(kind, config)`` if present (e.g. a checkpoint after completion)."""
        path = self.path(kind, config)
        _sidecar(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)


def kept(store: Store | None, kind: str, config: dict[str, Any],
         make: Callable[[], tuple[dict[str, torch.Tensor], dict]]) -> tuple[dict[str, torch.Tensor], dict]:
    """``make() -> (tensors, meta)`` through ``store.get_or_make`` (loaded when made before), or simply called
    without a store: the tensors and meta either way."""
    if store is None:
        return make()
    artifact = store.get_or_make(kind, config, make)
    return artifact.tensors, artifact.meta
