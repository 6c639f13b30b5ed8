"""What extracting views will cost, printed before extraction starts.

Bytes per audio second of each stream as the store writes it, and extraction speeds, as measured
on this project's reference machine (BENCHMARKS.md; a 2-core AMD EPYC VM, no GPU):

* codes: 1,204 B/s uncompressed (8 levels x 75 frames x 2 B; 828 B/s on disk with zstd), section 1;
* latent: 15,743 B/s on disk (float16 [75, 128] per s, zstd), section 1;
* energy: 150 B/s (float16, 75 frames per s, uncompressed);
* ssl: 1.12 MB/s for WavLM-Large's 12 layers on disk (186,388 B/s measured for 2 layers), section 5;
  scaled by the layers kept;
* time: the codec streams at 17.7 audio s per wall s (``pipeline extract``, untrained codec, both
  cores, section 1), the SSL stream at 5.2 (12 layers, section 5), each augmentation at its
  measured speed on one core (``Augmentation.audio_per_second``, bench/results/augment.json).

An estimate, not a promise: a GPU runs the encoders tens of times faster; the augmentations then
dominate (they run on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from extract.augment.views import View

BYTES_PER_SECOND = {"codes": 1_204, "latent": 15_743, "energy": 150, "ssl": 1_118_328}
SSL_LAYERS_MEASURED = 12
CODEC_SPEED = 17.7
"""Audio s per wall s of the codec streams (codes, latent, energy come from one encoder pass)."""
SSL_SPEED = 5.2
"""Audio s per wall s of the SSL stream, 12 layers."""


@dataclass(frozen=True)
class ViewCost:
    """A view's estimated cost: its audio, bytes per stream, total bytes and wall seconds."""

    view: str
    audio_seconds: float
    bytes: dict[str, int]
    seconds: float

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


def estimate(views: dict[str, View], audio_seconds: dict[str, float], ssl_layers: int = SSL_LAYERS_MEASURED) -> list[ViewCost]:
    """Each view's cost on a corpus with ``audio_seconds`` per split (module docstring)."""
    costs = []
    for name, view in views.items():
        audio = sum(audio_seconds.get(split, 0.0) for split in view.splits)
        rates = dict(BYTES_PER_SECOND, ssl=BYTES_PER_SECOND["ssl"] * ssl_layers / SSL_LAYERS_MEASURED)
        sizes = {stream: int(round(audio * rates[stream])) for stream in view.streams}
        seconds = sum(audio / step.audio_per_second() + step.setup_seconds() for step in view.chain)
        if set(view.streams) & {"codes", "latent", "energy"}:
            seconds += audio / CODEC_SPEED
        if "ssl" in view.streams:
            seconds += audio / SSL_SPEED * ssl_layers / SSL_LAYERS_MEASURED
        costs.append(ViewCost(name, audio, sizes, seconds))
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
    lines.append(f"views: {len(costs)}, about {_size(total_bytes)} and {_duration(total_s)} on a 2-core CPU "
                 "(BENCHMARKS.md rates; a GPU runs the encoders far faster)")
    return "\n".join(lines)
