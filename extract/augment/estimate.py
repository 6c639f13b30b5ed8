"""What extracting views will cost, printed before extraction starts.

Bytes per audio second of each stream as the store writes it, and extraction speeds, as measured
on this project's reference machine (BENCHMARKS.md; a 2-core AMD EPYC VM, no GPU):

* codes: 1,204 B/s uncompressed (8 levels x 75 frames x 2 B; 828 B/s on disk with zstd), section 1;
* latent: 15,743 B/s on disk (float16 [75, 128] per s, zstd), section 1;
* energy: 150 B/s (float16, 75 frames per s, uncompressed);
* ssl: 1.12 MB/s for WavLM-Large's 12 layers on disk as float16 (186,388 B/s measured for 2 layers),
  section 5; scaled by the layers kept and by the stream's storage (int8, the default, about half:
  `store.sslstorage`, BENCHMARKS section 18);
* time: CPU cost, then the share of the machine this run gets now. The rates are what a core does
  when it has the core to itself: the codec streams at 17.7 audio s per s with both cores
  (``pipeline extract``, untrained codec, section 1), the SSL stream at 5.2 (12 layers, both
  cores, section 5), each augmentation at its measured speed on one core
  (``Augmentation.audio_per_second``, bench/results/augment.json: the median of short calls, which a
  loaded scheduler mostly lets run unpreempted, so close to CPU time, not to throughput under
  load), plus what it spends once per process over the view's utterances (simulated rooms: one per
  utterance at most, ``Augmentation.setup_seconds``). Each part's wall time is its core-seconds divided by the cores it gets beside the others'
  runnable threads (:class:`Machine`: the 1-minute load average and the cores this process may
  use, read when the estimate is made, and printed with it). Taking the rates as wall speeds made
  the estimate about 10x optimistic on the shared 2-core VM at load 14 to 18 (bench/results/views.json:
  about 3.5 s estimated against 26 to 44 s measured per view of 43 audio s); at that load the
  shares below make it about 9x slower than on an idle machine.

An estimate, not a promise: a GPU runs the encoders tens of times faster; the augmentations then
dominate (they run on the CPU). It counts no start-up (weights, opening the store) and no I/O wait.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from extract.augment.views import View
from store.sslstorage import SSLStorage

BYTES_PER_SECOND = {"codes": 1_204, "latent": 15_743, "energy": 150, "ssl": 1_118_328}
SSL_LAYERS_MEASURED = 12
SSL_HIDDEN = 1024
"""WavLM-Large's width, for the storage's bytes per frame against float16's (the +2 scale bytes of int8)."""
CODEC_SPEED = 17.7
"""Audio s per wall s of the codec streams (codes, latent, energy come from one encoder pass) with
:data:`ENCODER_CORES` cores to itself."""
SSL_SPEED = 5.2
"""Audio s per wall s of the SSL stream, 12 layers, with :data:`ENCODER_CORES` cores to itself."""
ENCODER_CORES = 2
"""The cores the encoder speeds were measured with (the reference machine's two)."""


@dataclass(frozen=True)
class Machine:
    """Where the estimate runs: ``cores`` this process may use, ``load`` the 1-minute load average
    (runnable threads of everyone else, before this run starts)."""

    cores: int
    load: float

    @classmethod
    def now(cls) -> Machine:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return cls(cores, os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)

    def cores_for(self, threads: int) -> float:
        """Cores ``threads`` CPU-bound threads get beside ``load`` others: each of the ``load +
        threads`` runnable threads gets an equal share when they outnumber the cores, and no thread
        more than one core."""
        threads = max(1, min(threads, self.cores))
        return threads * min(1.0, self.cores / (max(self.load, 0.0) + threads))

    def describe(self) -> str:
        return f"{self.cores} cores at 1-min load {self.load:.1f}"


IDLE = Machine(ENCODER_CORES, 0.0)
"""The reference machine with nothing else running (what the rates were measured as)."""


@dataclass(frozen=True)
class ViewCost:
    """A view's estimated cost: its audio, bytes per stream, total bytes, wall seconds on ``machine``
    and the core-seconds of CPU work behind them."""

    view: str
    audio_seconds: float
    bytes: dict[str, int]
    seconds: float
    idle_seconds: float = 0.0
    """Wall seconds on the reference machine with nothing else running."""
    core_seconds: float = 0.0
    machine: Machine = IDLE

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


def estimate(views: dict[str, View], audio_seconds: dict[str, float], ssl_layers: int = SSL_LAYERS_MEASURED,
             machine: Machine | None = None, utterances: dict[str, int] | None = None,
             ssl_storage: SSLStorage | None = None) -> list[ViewCost]:
    """Each view's cost on a corpus with ``audio_seconds`` (and ``utterances``, None: not known) per
    split, on ``machine`` (default: this one now, :meth:`Machine.now`), its SSL stream stored as
    ``ssl_storage`` (default float16): see the module docstring. ``seconds``: wall seconds there;
    ``core_seconds``: the CPU work, whatever the load."""
    machine = machine or Machine.now()
    storage = ssl_storage or SSLStorage()
    share = storage.bytes_per_frame(ssl_layers, SSL_HIDDEN) / SSLStorage().bytes_per_frame(ssl_layers, SSL_HIDDEN)
    costs = []
    for name, view in views.items():
        audio = sum(audio_seconds.get(split, 0.0) for split in view.splits)
        count = None if utterances is None else sum(utterances.get(split, 0) for split in view.splits)
        rates = dict(BYTES_PER_SECOND, ssl=BYTES_PER_SECOND["ssl"] * ssl_layers / SSL_LAYERS_MEASURED * share)
        sizes = {stream: int(round(audio * rates[stream])) for stream in view.streams}
        augment = sum(audio / step.audio_per_second() + step.setup_seconds(count) for step in view.chain)  # one core
        encoders = 0.0  # core-seconds on ENCODER_CORES cores
        if set(view.streams) & {"codes", "latent", "energy"}:
            encoders += ENCODER_CORES * audio / CODEC_SPEED
        if "ssl" in view.streams:
            encoders += ENCODER_CORES * audio / SSL_SPEED * ssl_layers / SSL_LAYERS_MEASURED
        seconds, idle = (augment / m.cores_for(1) + encoders / m.cores_for(ENCODER_CORES) for m in (machine, IDLE))
        costs.append(ViewCost(name, audio, sizes, seconds, idle, augment + encoders, machine))
    return costs


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def format_estimate(costs: list[ViewCost]) -> str:
    """One line per view and a total, e.g. ``view mp3: 4362 audio s, codes+latent+energy 74.5 MB, ~5 min``."""
    lines = []
    for c in costs:
        streams = "+".join(c.bytes) or "no streams"
        lines.append(f"view {c.view}: {c.audio_seconds:.0f} audio s, {streams} {_size(c.total_bytes)}, ~{_duration(c.seconds)}")
    total_bytes = sum(c.total_bytes for c in costs)
    total_s = sum(c.seconds for c in costs)
    machine = costs[0].machine if costs else IDLE
    idle = sum(c.idle_seconds for c in costs)
    lines.append(f"views: {len(costs)}, about {_size(total_bytes)} and {_duration(total_s)} here ({machine.describe()}, "
                 f"read now; about {_duration(idle)} on an idle 2-core CPU; BENCHMARKS.md rates, start-up not "
                 "counted; a GPU runs the encoders far faster)")
    return "\n".join(lines)
