"""Activation records: what each unit does on real text, gathered in one streaming pass.

The stream (loading.activations) visits 64-token excerpts of the run's corpus in a seeded
random order, each run through the model as its own sequence. An excerpt that crosses a
document boundary (an end-of-text token before its last position) is skipped. Excerpts
alternate between two halves by their place in that order: explanations are written from the
"explain" half and scored on the "score" half, so the two never share an excerpt. Per unit
and half we keep:

- top excerpts: the highest max activation seen so far (a running top-k);
- random excerpts: the first ones of the half, which the random order makes a uniform sample
  (the same excerpts for every unit);
- quantile excerpts: per bin of the unit's max activation (bin edges are quantiles of the
  first `pilot` excerpts' maxima over zero), the first excerpts landing in each bin after the
  pilot, again a uniform sample of the bin;
- moments of every activation: mean, variance, skewness, kurtosis, max, fraction nonzero.

The pass saves its state every few batches (atomically) and resumes where it stopped. Arrays
are saved with the packed weights format, so mostly-zero activations take little space.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sparsecircuits.errors import UserError
from sparsecircuits.explain.units import Unit, unit_activations
from sparsecircuits.files import atomic_path, write_json_atomic
from sparsecircuits.loading import Run
from sparsecircuits.loading.activations import iter_activations, run_corpus
from sparsecircuits.loading.weights_file import load_weights, save_weights
from sparsecircuits.validation import load_json

HALVES = ("explain", "score")
STATE_FILE = "records.safetensors"
INFO_FILE = "records.json"


@dataclass
class RecordSettings:
    n_tokens: int = 500_000  # tokens streamed (both halves, skipped excerpts included)
    excerpt_tokens: int = 64
    top: int = 20  # top excerpts kept per unit and half
    random: int = 20  # random excerpts per half
    quantile_bins: int = 5
    per_bin: int = 4
    pilot: int = 512  # excerpts whose maxima set the quantile bin edges
    split: str = "train"  # the paper takes excerpts from the training distribution
    seed: int = 0
    batch_size: int = 64

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Excerpt:
    tokens: list[int]
    activations: list[float]
    offset: int  # where the excerpt starts in the split's token stream

    @property
    def max(self) -> float:
        return max(self.activations)


@dataclass
class UnitRecords:
    unit: Unit
    top: dict[str, list[Excerpt]]  # half -> excerpts, highest first
    random: dict[str, list[Excerpt]]
    quantiles: dict[str, list[list[Excerpt]]]  # half -> bins (lowest first) -> excerpts
    stats: dict[str, float] = field(default_factory=dict)

    def max_activation(self) -> float:
        """The largest activation seen in the pass (the 10 of the 0..10 scale)."""
        return self.stats["max"]


class RecordPass:
    """The running state of one pass; `update` takes one batch of excerpts."""

    def __init__(self, units: list[Unit], settings: RecordSettings, eot_id: int) -> None:
        self.units, self.settings, self.eot_id = units, settings, eot_id
        n, length = len(units), settings.excerpt_tokens
        halves = len(HALVES)
        self.windows_done = 0  # windows of the stream consumed (for resuming)
        self.seen = torch.zeros(halves, dtype=torch.long)  # valid excerpts per half
        self.top_max = torch.full((halves, n, settings.top), -math.inf)
        self.top_tokens = torch.zeros(halves, n, settings.top, length, dtype=torch.long)
        self.top_acts = torch.zeros(halves, n, settings.top, length)
        self.top_offsets = torch.zeros(halves, n, settings.top, dtype=torch.long)
        self.random_tokens = torch.zeros(halves, settings.random, length, dtype=torch.long)
        self.random_acts = torch.zeros(halves, n, settings.random, length)
        self.random_offsets = torch.zeros(halves, settings.random, dtype=torch.long)
        bins, per_bin = settings.quantile_bins, settings.per_bin
        self.pilot_max: list[torch.Tensor] = []  # [excerpts, n] until the edges are set
        self.edges = torch.zeros(n, max(bins - 1, 0))
        self.edges_set = torch.zeros((), dtype=torch.bool)
        self.bin_count = torch.zeros(halves, n, bins, dtype=torch.long)
        self.bin_tokens = torch.zeros(halves, n, bins, per_bin, length, dtype=torch.long)
        self.bin_acts = torch.zeros(halves, n, bins, per_bin, length)
        self.bin_offsets = torch.zeros(halves, n, bins, per_bin, dtype=torch.long)
        self.power_sums = torch.zeros(5, n, dtype=torch.float64)  # count, sum a, a^2, a^3, a^4
        self.nonzero = torch.zeros(n, dtype=torch.float64)
        self.max = torch.full((n,), -math.inf)

    def update(
        self, tokens: torch.Tensor, acts: torch.Tensor, offsets: torch.Tensor, first_window: int
    ) -> None:
        """`tokens` [b, length], `acts` [b, length, units], `offsets` [b] of one batch of the
        stream; window i of the stream goes to half i % 2."""
        keep = ~(tokens[:, :-1] == self.eot_id).any(dim=1)  # EOT inside: crosses documents
        halves = (torch.arange(len(tokens)) + first_window) % 2
        acts = acts.permute(0, 2, 1)  # [b, units, length]
        self.windows_done = first_window + len(tokens)
        valid = acts[keep]
        if len(valid):
            self.add_moments(valid)
        for half in range(len(HALVES)):
            chosen = keep & (halves == half)
            if chosen.any():
                self.add_half(half, tokens[chosen], acts[chosen], offsets[chosen])

    def add_moments(self, acts: torch.Tensor) -> None:
        flat = acts.permute(1, 0, 2).reshape(acts.shape[1], -1).double()
        self.power_sums[0] += flat.shape[1]
        for power in range(1, 5):
            self.power_sums[power] += flat.pow(power).sum(dim=1)
        self.nonzero += (flat != 0).sum(dim=1)
        self.max = torch.maximum(self.max, flat.max(dim=1).values.float())

    def add_half(
        self, half: int, tokens: torch.Tensor, acts: torch.Tensor, offsets: torch.Tensor
    ) -> None:
        n_units = acts.shape[1]
        maxima = acts.max(dim=2).values  # [b, units]
        # Running top-k: old and new candidates together, keep the k largest maxima.
        candidates_max = torch.cat([self.top_max[half], maxima.T], dim=1)
        order = candidates_max.topk(self.settings.top, dim=1).indices  # [units, top]
        new_tokens = tokens.unsqueeze(0).expand(n_units, -1, -1)
        all_tokens = torch.cat([self.top_tokens[half], new_tokens], dim=1)
        all_acts = torch.cat([self.top_acts[half], acts.permute(1, 0, 2)], dim=1)
        all_offsets = torch.cat([self.top_offsets[half], offsets.expand(n_units, -1)], dim=1)
        self.top_max[half] = candidates_max.gather(1, order)
        self.top_offsets[half] = all_offsets.gather(1, order)
        index = order.unsqueeze(-1).expand(-1, -1, all_tokens.shape[-1])
        self.top_tokens[half] = all_tokens.gather(1, index)
        self.top_acts[half] = all_acts.gather(1, index)
        # Random: the first excerpts of the half (the stream's order is random).
        for row in range(len(tokens)):
            slot = int(self.seen[half])
            if slot < self.settings.random:
                self.random_tokens[half, slot] = tokens[row]
                self.random_acts[half, :, slot] = acts[row]
                self.random_offsets[half, slot] = offsets[row]
            self.seen[half] += 1
            self.add_to_bins(half, tokens[row], acts[row], maxima[row], offsets[row])

    def add_to_bins(
        self,
        half: int,
        tokens: torch.Tensor,
        acts: torch.Tensor,
        maxima: torch.Tensor,
        offset: torch.Tensor,
    ) -> None:
        if not self.edges_set:
            self.pilot_max.append(maxima)
            if len(self.pilot_max) >= self.settings.pilot:
                self.set_edges(torch.stack(self.pilot_max))
            return
        active = maxima > 0
        bins = torch.searchsorted(self.edges, maxima.unsqueeze(1)).squeeze(1)  # [units]
        units = torch.arange(len(maxima))
        counts = self.bin_count[half, units, bins]
        room = active & (counts < self.settings.per_bin)
        slots = counts.clamp(max=self.settings.per_bin - 1)
        chosen = units[room]
        self.bin_tokens[half, chosen, bins[room], slots[room]] = tokens
        self.bin_acts[half, chosen, bins[room], slots[room]] = acts[room]
        self.bin_offsets[half, chosen, bins[room], slots[room]] = offset
        self.bin_count[half, units, bins] += active.long()

    def set_edges(self, pilot: torch.Tensor) -> None:
        """Bin edges per unit: quantiles of the pilot excerpts' maxima over zero."""
        bins = self.settings.quantile_bins
        levels = torch.linspace(0, 1, bins + 1)[1:-1]
        for unit in range(pilot.shape[1]):
            positive = pilot[:, unit][pilot[:, unit] > 0]
            if len(positive):
                self.edges[unit] = torch.quantile(positive, levels)
        self.edges_set = torch.ones((), dtype=torch.bool)
        self.pilot_max = []

    # --- saving, resuming, reading ------------------------------------------------------

    ARRAYS = (
        "seen", "top_max", "top_tokens", "top_acts", "top_offsets", "random_tokens",
        "random_acts", "random_offsets", "edges", "edges_set", "bin_count", "bin_tokens",
        "bin_acts", "bin_offsets", "power_sums", "nonzero", "max",
    )  # fmt: skip

    def save(self, folder: Path, info: dict) -> None:
        tensors = {name: getattr(self, name) for name in self.ARRAYS}
        if self.pilot_max:
            tensors["pilot_max"] = torch.stack(self.pilot_max)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / STATE_FILE) as temporary:
            save_weights({k: v.contiguous() for k, v in tensors.items()}, temporary)
        write_json_atomic(folder / INFO_FILE, info | {"windows_done": self.windows_done})

    def load(self, folder: Path) -> None:
        info = load_json(folder / INFO_FILE, dict, "records file")
        tensors = load_weights(folder / STATE_FILE)
        for name in self.ARRAYS:
            expected = getattr(self, name)
            if tensors[name].shape != expected.shape:
                raise UserError(f"{folder / STATE_FILE}: {name} does not fit these units")
            setattr(self, name, tensors[name].to(expected.dtype))
        pilot = tensors.get("pilot_max")
        self.pilot_max = list(pilot) if pilot is not None else []
        self.windows_done = int(info["windows_done"])

    def records(self) -> list[UnitRecords]:
        count = self.power_sums[0].clamp(min=1)
        mean = self.power_sums[1] / count
        raw = [self.power_sums[p] / count for p in range(2, 5)]
        variance = (raw[0] - mean**2).clamp(min=0)
        third = raw[1] - 3 * mean * raw[0] + 2 * mean**3
        fourth = raw[2] - 4 * mean * raw[1] + 6 * mean**2 * raw[0] - 3 * mean**4
        std = variance.sqrt()
        skew = torch.where(std > 0, third / std.clamp(min=1e-12) ** 3, torch.zeros_like(std))
        kurt = torch.where(std > 0, fourth / std.clamp(min=1e-12) ** 4 - 3, torch.zeros_like(std))
        out = []
        for u, unit in enumerate(self.units):
            top, random, quantiles = {}, {}, {}
            for h, half in enumerate(HALVES):
                filled = int((self.top_max[h, u] > -math.inf).sum())
                top[half] = [
                    excerpt(
                        self.top_tokens[h, u, i], self.top_acts[h, u, i], self.top_offsets[h, u, i]
                    )
                    for i in range(filled)
                ]
                n_random = min(int(self.seen[h]), self.settings.random)
                random[half] = [
                    excerpt(
                        self.random_tokens[h, i],
                        self.random_acts[h, u, i],
                        self.random_offsets[h, i],
                    )
                    for i in range(n_random)
                ]
                quantiles[half] = [
                    [
                        excerpt(
                            self.bin_tokens[h, u, b, i],
                            self.bin_acts[h, u, b, i],
                            self.bin_offsets[h, u, b, i],
                        )
                        for i in range(min(int(self.bin_count[h, u, b]), self.settings.per_bin))
                    ]
                    for b in range(self.settings.quantile_bins)
                ]
            stats = {
                "mean": float(mean[u]),
                "variance": float(variance[u]),
                "skewness": float(skew[u]),
                "kurtosis": float(kurt[u]),
                "max": float(self.max[u]),
                "fraction_nonzero": float(self.nonzero[u] / count[u]),
                "tokens": int(self.power_sums[0, u]),
            }
            out.append(UnitRecords(unit, top, random, quantiles, stats))
        return out


def excerpt(tokens: torch.Tensor, acts: torch.Tensor, offset: torch.Tensor) -> Excerpt:
    return Excerpt(tokens.tolist(), acts.tolist(), int(offset))


def collect_records(
    run: Run,
    units: list[Unit],
    settings: RecordSettings,
    folder: Path | None = None,
    save_every: int = 20,
    max_batches: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> list[UnitRecords]:
    """Activation records of `units` over the run's corpus; with `folder`, saved there every
    `save_every` batches and resumed from it (the same units and settings only). With
    `max_batches`, stop after that many batches (a later call resumes)."""
    state = RecordPass(units, settings, run.tokenizer.eot_id)
    info = {"units": [unit.name for unit in units], "settings": settings.to_dict()}
    if folder is not None and (folder / INFO_FILE).is_file():
        stored = load_json(folder / INFO_FILE, dict, "records file")
        if {k: stored.get(k) for k in info} != info:
            raise UserError(f"{folder} holds records of other units or settings; choose another")
        state.load(folder)
        if state.windows_done:
            log(f"resuming the record pass at excerpt {state.windows_done:,}")
    corpus = run_corpus(run)
    total = settings.n_tokens // settings.excerpt_tokens
    stream = iter_activations(
        run,
        sorted({unit.hook for unit in units}),
        max(1, (total - state.windows_done) * settings.excerpt_tokens),
        settings.batch_size,
        split=settings.split,
        order="shuffled",
        seed=settings.seed,
        window=settings.excerpt_tokens,
        start=state.windows_done,
        corpus=corpus,
        progress=progress,
    )
    if state.windows_done < total:
        for number, batch in enumerate(stream, start=1):
            acts = unit_activations(batch.activations, units)
            state.update(batch.tokens, acts, batch.offsets, batch.first_window)
            if folder is not None and number % save_every == 0:
                state.save(folder, info)
            if number == max_batches:
                break
    if folder is not None:
        state.save(folder, info)
    return state.records()
