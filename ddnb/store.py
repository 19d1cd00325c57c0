"""Artifacts on disk: safetensors for tensors, a JSON sidecar for everything else.

Every artifact is a pair ``NAME.safetensors`` + ``NAME.json``. The JSON holds the config that made
the tensors, the ddnb version, the seed, and the sha256 of the tensor file; the tensor file's own
header holds the sha256 of the config, so editing either file is detected on load. Writes are atomic
(both files to temporary files first, fsync, then rename; tensors first, JSON last), so a killed process
never leaves a file that looks complete and a failed write (a full disk) leaves the store as it was.
Nothing is ever unpickled.

``Store`` keys artifacts by a hash of ``(kind, config)`` so a rerun with the same config finds its
result instead of recomputing it. The config says what went in, not what the code did with it, so each kind
also has a version (``VERSIONS``): an artifact made by an older version of its kind is remade, not served,
and so is a corrupt or truncated one. Processes sharing a store make each artifact once: the maker holds a
lock file beside it (``flock``), and a second process asking for it waits and then loads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save as safetensors_bytes

from ddnb import __version__
from ddnb.errors import DdnbError, WriteError, first_line

try:
    import fcntl
except ImportError:  # not on Windows: there a store is not shared between processes making the same artifact
    fcntl = None

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
    # the book's results, made by the jobs of ddnb.sections from the functions of ddnb.analysis
    "pool-subset": 1, "pool-early": 1, "curvature": 1,  # sections.dynamics (analysis.dynamics, curvature)
    "pool-early-curve": 1, "pool-agreement": 1, "recognition": 1,
    "evaluation": 1, "mixing": 1, "model": 1, "feature-map": 1, "real-model-score": 1,  # sections.common, .substitution
    "influence": 1, "influence-agreement": 2,  # sections.semantics (analysis.influence); 2: a diverged CG solve scores NaN
    "notebook": 1,  # ddnb.book: an executed notebook (its key already holds the hash of ddnb's source)
}


def kind_version(kind: str) -> int:
    """The version of ``kind`` this ddnb makes (``VERSIONS``; 1 when unlisted)."""
    return VERSIONS.get(kind, 1)


def _made_by(sidecar: dict[str, Any]) -> int:
    """The version of its kind an artifact was made by (1 for sidecars written before kinds had versions)."""
    return sidecar.get("version", 1)


def _stale(sidecar: dict[str, Any]) -> bool:
    return _made_by(sidecar) != kind_version(sidecar.get("kind", "artifact"))


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


_NEVER = object()  # no field's value: a field without an ``unkeyed`` value is always keyed


def settings_key(settings: Any) -> dict[str, Any]:
    """A settings dataclass as the part of a store key it makes: every field (``dataclasses.asdict``) but those whose
    metadata marks them ``runtime`` (they split the work, not its result) or whose value is their metadata's
    ``unkeyed`` value (fields added after results were kept, at the value those results had)."""
    fields = {f.name: f for f in dataclasses.fields(settings)}
    return {name: value for name, value in dataclasses.asdict(settings).items()
            if not fields[name].metadata.get("runtime") and value != fields[name].metadata.get("unkeyed", _NEVER)}


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


def _write_temporary(path: Path, data: bytes, written: list[Path]) -> None:
    """``data`` in a new temporary file beside ``path``, on disk (fsync); its name is appended to ``written``
    first, so that the caller removes it whatever happens. An ``OSError`` becomes a one-line ``WriteError``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        written.append(Path(temporary))
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        raise WriteError(f"cannot write {path} ({error.strerror or first_line(error)})") from None


def _write_pair(path: Path, tensors: bytes, sidecar: bytes) -> None:
    """Write an artifact's tensor file and sidecar. Both go to temporary files first, so a failed write leaves
    what was there; then the old sidecar goes (it must never vouch for new tensors), the tensors are renamed
    into place, and the sidecar last: a killed process never leaves a pair that looks complete."""
    written: list[Path] = []
    try:
        _write_temporary(path, tensors, written)
        _write_temporary(_sidecar(path), sidecar, written)
        _sidecar(path).unlink(missing_ok=True)
        os.replace(written[0], path)
        os.replace(written[1], _sidecar(path))
    finally:
        for temporary in written:
            temporary.unlink(missing_ok=True)  # renamed ones are gone already


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
    _write_pair(path, data, json.dumps(sidecar, indent=1, sort_keys=True).encode())
    return path


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of an artifact, without loading or verifying tensors."""
    path = artifact_path(path)
    if not path.exists():
        raise DdnbError(f"no artifact at {path}")
    if not path.is_file():
        raise DdnbError(f"{path} is a folder, not an artifact file")
    if not _sidecar(path).exists():
        raise DdnbError(f"{path} has no sidecar {_sidecar(path).name}: incomplete artifact, not used")
    try:
        sidecar = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
        raise DdnbError(f"{_sidecar(path)} is not a readable JSON sidecar ({first_line(error)}): corrupt artifact, not used") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        raise DdnbError(f"{_sidecar(path)} is not a ddnb artifact sidecar")
    missing = sorted({"config", "meta", "sha256"} - set(sidecar))
    if missing:
        raise DdnbError(f"{_sidecar(path)} lacks {', '.join(missing)}: corrupt artifact, not used")
    return sidecar


def check_writable(path: str | Path) -> None:
    """Raise ``DdnbError`` unless an artifact can be written at ``path``: the nearest existing folder on its way is
    a folder that takes new files. Checked before long work, so that no hour of it is lost to a typo."""
    folder = artifact_path(path).parent.absolute()
    while not folder.exists():
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise DdnbError(f"cannot write in {folder} ({error.strerror or first_line(error)}); give a path in a folder "
                        "you can write to") from None


def _truncated(path: Path) -> bool:
    """True when the tensor file is not as long as its own safetensors header says (a cut-off copy or write),
    or has no such header. Reads only the header: cheap enough for every ``Store.exists``."""
    try:
        with open(path, "rb") as file:
            length = int.from_bytes(file.read(8), "little")
            if not 2 <= length <= min(path.stat().st_size - 8, 100_000_000):
                return True
            header = json.loads(file.read(length))
        end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
        return path.stat().st_size != 8 + length + end
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return True


def _intact(path: Path, sidecar: dict[str, Any]) -> bool:
    """True when the tensor file's sha256 is the one in its sidecar (reads the whole file)."""
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest() == sidecar["sha256"]
    except OSError:
        return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the lock file ``path`` (made for the purpose and removed on release), so that
    processes sharing a store make an artifact one at a time. After waiting, a process checks that the file it
    locked is still the one at ``path`` (the holder removes it when done) and otherwise locks the new one."""
    if fcntl is None:
        yield
        return
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise WriteError(f"cannot write {path} ({error.strerror or first_line(error)})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process is making it: say why this one seems to stand still
            print(f"ddnb: waiting for another process making {path.name[1:-5]} in {path.parent}", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if os.fstat(handle).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(handle)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: a waiter then finds it gone and locks a fresh file
        os.close(handle)


def load_artifact(path: str | Path, device: torch.device | str = "cpu") -> Artifact:
    """Load and verify an artifact; a corrupt or tampered pair raises ``DdnbError``."""
    path = artifact_path(path)
    sidecar = read_sidecar(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DdnbError(f"cannot read {path} ({error.strerror or first_line(error)})") from None
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
    return Artifact(tensors, sidecar["config"], sidecar["meta"], path, sidecar.get("kind"))


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


def work_so_far(earlier: dict[str, float], started: tuple[float, float]) -> dict[str, float]:
    """Wall and CPU seconds of this attempt since ``started`` (perf_counter, process_time), plus the ``earlier``
    attempts' (a checkpoint's meta keeps them; a resumed job passes them on as ``meta["earlier_cost"]``)."""
    return {"wall_s": earlier.get("wall_s", 0.0) + time.perf_counter() - started[0],
            "cpu_s": earlier.get("cpu_s", 0.0) + time.process_time() - started[1]}


def peak_memory_mb() -> dict[str, float]:
    """``peak_rss_mb``: the largest resident size of this process so far (Linux counts kB); ``peak_cuda_mb``: the
    most CUDA memory allocated since the last reset of the peak (with a GPU)."""
    import resource

    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


class Store:
    """A folder of artifacts keyed by ``(kind, config)``: ``ROOT/KIND/KEY.safetensors`` + ``.json``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()
        if self.root.exists() and not self.root.is_dir():
            raise DdnbError(f"the store {self.root} is a file; give a folder (new or holding a ddnb store)")

    def path(self, kind: str, config: dict[str, Any]) -> Path:
        """Where the artifact for ``(kind, config)`` lives (whether or not it exists)."""
        return self.root / kind / (config_key(kind, config) + SUFFIX)

    def exists(self, kind: str, config: dict[str, Any]) -> bool:
        """True when a complete artifact (tensors and sidecar) of the current version of ``kind`` exists for
        ``(kind, config)``; one made by another version, a truncated one or one with an unreadable sidecar does not
        count (``get_or_make`` replaces it). Checks the header, not the checksum: ``find`` verifies that."""
        path = self.path(kind, config)
        if not (path.exists() and _sidecar(path).exists()):
            return False
        try:
            return not _stale(read_sidecar(path)) and not _truncated(path)
        except DdnbError:
            return False  # unreadable: made again, and the new one replaces it

    def find(self, kind: str, config: dict[str, Any], device: torch.device | str = "cpu", warn: bool = True) -> Artifact | None:
        """The artifact for ``(kind, config)``, verified, or None when there is none to use: missing, made by
        another version, or corrupt (``warn``: a warning says so; it is to be made again and replaced)."""
        if not self.exists(kind, config):
            return None
        try:
            return self.load(kind, config, device)
        except DdnbError as error:
            if warn:
                warnings.warn(f"{error}; making it again", stacklevel=2)
            return None

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
        job's cost is all the work kept in it (work after its last checkpoint was redone, and counts once).
        A corrupt or truncated artifact is made again. Processes sharing the store make it once: the others
        wait for the maker (a lock file beside the artifact) and load its result."""
        found = self.find(kind, config)
        if found is not None:
            return found
        path = self.path(kind, config)
        with _locked(path.with_name(f".{path.stem}.lock")):
            found = self.find(kind, config, warn=False)  # made by another process while this one waited (or warned of above)
            if found is not None:
                return found
            wall, cpu = time.perf_counter(), time.process_time()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            tensors, meta = make()
            earlier = meta.get("earlier_cost", {})
            cost = {"wall_s": time.perf_counter() - wall + earlier.get("wall_s", 0.0),
                    "cpu_s": time.process_time() - cpu + earlier.get("cpu_s", 0.0), **peak_memory_mb()}
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
        if self.find(artifact.kind, artifact.config) is None:  # a corrupt copy there is replaced
            _write_pair(target, artifact_path(path).read_bytes(), _sidecar(artifact_path(path)).read_bytes())
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
        ``wall_s`` (what making it took; 0 when not recorded), ``stale`` (made by another version of its kind) and
        ``corrupt`` (a file missing, truncated or not matching its checksum, or an unreadable sidecar: it would be
        made again). Reads every tensor file, to verify its checksum. (A sidecar without tensors is not listed:
        ddnb never leaves one, and a JSON file there may be no artifact's.)"""
        return [self._row(path) for path in sorted(self.root.glob(f"*/*{SUFFIX}"))]

    @staticmethod
    def _row(path: Path) -> dict[str, Any]:
        size = sum(part.stat().st_size for part in (path, _sidecar(path)) if part.is_file())
        try:
            sidecar = read_sidecar(path)
        except DdnbError:  # incomplete or unreadable: its kind is the folder it is in
            return {"kind": path.parent.name, "path": path, "created": "", "bytes": size, "wall_s": 0.0,
                    "stale": False, "corrupt": True}
        return {"kind": sidecar.get("kind", path.parent.name), "path": path, "created": sidecar.get("created", ""),
                "bytes": size, "wall_s": sidecar.get("cost", {}).get("wall_s", 0.0), "stale": _stale(sidecar),
                "corrupt": not _intact(path, sidecar)}

    def prune(self) -> list[Path]:
        """Delete the artifacts made by another version of their kind and the corrupt ones (they would be made
        again, never served); returns their paths."""
        stale = [row["path"] for row in self.listing() if row["stale"] or row["corrupt"]]
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
