"""Evaluate configurations on the collected hashes and write the Markdown report and PNG plots."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.quality.analysis import PairStats, fit_lower_tail, min_distances, own_min_distance
from bench.quality.analysis import wilson as wilson_interval
from bench.quality.collect import HashSet
from bench.quality.edits import EDITS, TIERS

__all__ = ["Ablation", "Configuration", "Result", "ablate", "evaluate", "write_report"]


@dataclass(frozen=True)
class Configuration:
    """Which enrolled views and which query views count, and the one match distance."""

    name: str
    enroll: Callable[[str], bool]
    query: Callable[[str], bool]
    distance: int
    description: str


@dataclass
class Result:
    config: Configuration
    own: np.ndarray  # per edited query: smallest distance to its own original
    wrong: np.ndarray  # per edited query (every 5th): smallest distance to any other original
    distractors: PairStats  # distractor pictures x originals
    held_out: np.ndarray  # bool per distractor: True for the half the threshold was not chosen on
    enrolled_per_image: float
    query_views_per_image: float
    enroll_seconds: float
    query_seconds: float

    def found(self) -> np.ndarray:
        return self.own <= self.config.distance

    def false_matches(self, which: np.ndarray | None = None) -> int:
        pm = self.distractors.pair_min
        if which is not None:
            pm = pm[which]
        return int((pm <= self.config.distance).sum())


def evaluate(
    config: Configuration,
    bank: HashSet,
    queries: HashSet,
    origin: np.ndarray,
    distractors: HashSet,
    enroll_seconds: float,
    query_seconds: float,
) -> Result:
    """Match edits and distractors against the bank under ``config``."""
    b = bank.select(config.enroll)
    q = queries.select(config.query)
    d = distractors.select(config.query)
    own = own_min_distance(q, b, origin)
    # Wrong-original matches on every 5th edited query: all of them would cost ~20 minutes with
    # the view profiles, for a check that the distractors already make on harder look-alikes.
    sample = np.arange(0, queries.pictures, 5)
    qs = queries.select(config.query)
    keep = np.isin(qs.owner, sample)
    remap = np.full(queries.pictures, -1)
    remap[sample] = np.arange(len(sample))
    sub = HashSet(qs.hashes[keep], remap[qs.owner[keep]], qs.name[keep], qs.names, len(sample))
    cross = min_distances(sub, b).pair_min.astype(np.int32)
    cross[np.arange(len(sample)), origin[sample]] = 257
    wrong = np.full(queries.pictures, 257)
    wrong[sample] = cross.min(axis=1)
    stats = min_distances(d, b)
    held_out = np.arange(distractors.pictures) % 2 == 1
    return Result(
        config,
        own,
        wrong,
        stats,
        held_out,
        b.views_per_picture(),
        q.views_per_picture() + 0 * len(d.owner),
        enroll_seconds,
        query_seconds,
    )


def _pct(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"{100 * k / n:.1f}% ({100 * lo:.1f}-{100 * hi:.1f})" if n else "-"


# The recall each tier should reach with zero false matches (issue 6).
TARGETS = {"A": 99.5, "B": 99.5, "C": 95.0, "D": 90.0, "E": 85.0, "F": 60.0, "G": 90.0, "H": 90.0}

# Edits whose picture holds other originals on purpose (collages, a photo pasted over another, a
# browser window over a wallpaper): a match with those originals is right, not wrong.
HOLDS_OTHERS = ("collage", "pasted", "desktop_browser_window")


def tier_rows(results: Sequence[Result], edit_index: np.ndarray) -> list[str]:
    names = " | ".join(r.config.name for r in results)
    header = f"| tier | what | queries | target | {names} |"
    lines = [header, "|---|---|---:|---:|" + "---:|" * len(results)]
    tier_of = np.array([EDITS[i].tier for i in edit_index])
    for tier, what in TIERS.items():
        mask = tier_of == tier
        n = int(mask.sum())
        cells = [_pct(int(r.found()[mask].sum()), n) for r in results]
        target = f">= {TARGETS[tier]:g}%"
        lines.append(f"| {tier} | {what} | {n} | {target} | " + " | ".join(cells) + " |")
    n = len(edit_index)
    cells = [_pct(int(r.found().sum()), n) for r in results]
    lines.append(f"| all | | {n} | | " + " | ".join(cells) + " |")
    return lines


def edit_rows(results: Sequence[Result], edit_index: np.ndarray) -> list[str]:
    header = "| tier | edit | queries | " + " | ".join(r.config.name for r in results) + " |"
    lines = [header, "|---|---|---:|" + "---:|" * len(results)]
    for k, edit in enumerate(EDITS):
        mask = edit_index == k
        n = int(mask.sum())
        if not n:
            continue
        cells = [_pct(int(r.found()[mask].sum()), n) for r in results]
        lines.append(f"| {edit.tier} | `{edit.name}` | {n} | " + " | ".join(cells) + " |")
    return lines


def false_rows(results: Sequence[Result]) -> list[str]:
    lines = [
        "| configuration | hash pairs compared | image pairs | false matches | per-pair rate "
        "(95% upper) | nearest distractor (bits) | tail fit: per hash pair at d | "
        "per image pair (union bound) | per image pair (min-distance fit) | "
        "expected false matches per query, 1M-image bank |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        pm = r.distractors.pair_min
        pairs = pm.size
        fm = r.false_matches()
        upper = 3 / pairs if fm == 0 else wilson_interval(fm, pairs)[1]
        tail = fit_lower_tail(r.distractors.histogram)
        per_hash = tail.rate(r.config.distance)
        per_hash_pairs = r.distractors.hash_pairs / pairs
        union = min(1.0, per_hash * per_hash_pairs)
        pm_hist = np.bincount(np.minimum(pm, 256).ravel(), minlength=257)
        direct = fit_lower_tail(pm_hist).rate(r.config.distance)
        rate = max(union, direct)
        lines.append(
            f"| {r.config.name} | {r.distractors.hash_pairs:,} | {pairs:,} | {fm} | "
            f"{upper:.1e} | {int(pm.min())} | {per_hash:.1e} | {union:.1e} | {direct:.1e} | "
            f"{rate * 1e6:.1e} |"
        )
    return lines


@dataclass(frozen=True)
class Ablation:
    """Recall of a subset of the shipped views (no false-match check: a subset of views can only
    match less often than the whole)."""

    name: str
    enrolled: float
    queried: float
    found: np.ndarray


def ablate(
    name: str,
    enroll: Callable[[str], bool],
    query: Callable[[str], bool],
    bank: HashSet,
    queries: HashSet,
    origin: np.ndarray,
    distance: int = 31,
) -> Ablation:
    """Recall of the edited queries when only some views are stored and looked up."""
    b, q = bank.select(enroll), queries.select(query)
    own = own_min_distance(q, b, origin)
    return Ablation(name, b.views_per_picture(), q.views_per_picture(), own <= distance)


def _ablation_rows(ablations: Sequence[Ablation], edit_index: np.ndarray) -> list[str]:
    tier_of = np.array([EDITS[i].tier for i in edit_index])
    lines = [
        "| views | stored per image | query hashes per image | " + " | ".join(TIERS) + " | all |",
        "|---|---:|---:|" + "---:|" * (len(TIERS) + 1),
    ]
    for a in ablations:
        cells = [f"{100 * a.found[tier_of == t].mean():.1f}%" for t in TIERS]
        lines.append(
            f"| {a.name} | {a.enrolled:.1f} | {a.queried:.1f} | "
            + " | ".join(cells)
            + f" | {100 * a.found.mean():.1f}% |"
        )
    return lines


def write_report(
    results: Sequence[Result],
    edit_index: np.ndarray,
    out: Path,
    meta: dict[str, str],
    ablations: Sequence[Ablation] = (),
    extra: Sequence[str] = (),
) -> None:
    """Write ``quality.md`` and the plots into ``out``; ``extra`` lines go before the notes."""
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(results, edit_index, out)
    lines = ["# Detection quality (issues 6 and 14)", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "## Configurations", ""]
    lines += [f"- **{r.config.name}**: {r.config.description}" for r in results]
    lines += ["", "## Recall per tier (Wilson 95% interval)", ""]
    lines += tier_rows(results, edit_index)
    lines += ["", f"![recall per tier]({plots[0]})", ""]
    lines += ["## False matches: distractors against the bank of originals", ""]
    lines += false_rows(results)
    lines += [""]
    lines += _false_notes(results)
    lines += ["", f"![distance histograms]({plots[1]})", ""]
    lines += ["## Cost", ""]
    lines += [
        "| configuration | hashes stored per image | query hashes per image | "
        "enroll hashing ms/image | query hashing ms/image |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.config.name} | {r.enrolled_per_image:.1f} | {r.query_views_per_image:.1f} | "
            f"{1e3 * r.enroll_seconds:.1f} | {1e3 * r.query_seconds:.1f} |"
        )
    if ablations:
        lines += ["", "## What each part buys (recall per tier, views added cumulatively)", ""]
        lines += _ablation_rows(ablations, edit_index)
    lines += ["", *extra]
    lines += ["", "## Notes", ""]
    lines += NOTES
    lines += ["", "## Recall per edit (Wilson 95% interval)", ""]
    lines += edit_rows(results, edit_index)
    lines += ["", "## Wrong-original matches among the edited queries", ""]
    lines += [
        "Every 5th edited query is also compared with the originals it was not made from "
        "(collages, pasted pictures and browser windows over a wallpaper hold other originals "
        "on purpose, so those are left out here).",
        "",
        "| configuration | queries | matched a wrong original |",
        "|---|---:|---:|",
    ]
    not_collage = np.array([not EDITS[i].name.startswith(HOLDS_OTHERS) for i in edit_index])
    not_collage &= np.arange(len(edit_index)) % 5 == 0
    for r in results:
        wrong = int((r.wrong[not_collage] <= r.config.distance).sum())
        lines.append(f"| {r.config.name} | {int(not_collage.sum())} | {wrong} |")
    (out / "quality.md").write_text("\n".join(lines) + "\n")


NOTES = [
    "- Tiers are the mean over their queries, so every edit of a tier weighs the same. Each edit's "
    "file is decoded by `matcher.hashing.decode_image`, as the client would decode an upload.",
    "- The enrollment ladder of centred crops (every 2.5% from 2.5% to 30%) contains the sizes of "
    "the fixed centred-crop edits (5, 10, 20, 30%): those rows are a best case. "
    "`crop_5-20%_centred` and `crop_5-20%_offset` draw a random size per photo, so they measure "
    "crops that fall between enrolled ones; off-centre crops also draw a random position.",
    "- PDQ is very shift-sensitive on these photos: a 1% shift of a crop window moves it by ~27 "
    "bits (median), a 2% change of scale by ~25. Random off-centre crops of 10-30% would need "
    "hundreds of enrolled windows; this profile covers them only partly (see per edit).",
    "- No threshold was tuned: every view uses the registry's PDQ distance (31). The views "
    "(trim rules, grid densities) were designed by looking at samples of these same 300 "
    "originals and their edits (every 3rd, 10th or 15th photo), so recall here is not measured "
    "on unseen photos; in particular the 7x7 offset grids were chosen after a 30-photo sample of "
    "the offset-crop edits. The distractors used while designing were the even-numbered half; "
    "the held-out table above shows the other half separately.",
    "- Tiers G and H (issue 14) are new: desktop browser screenshots (maximised, or a window "
    "over another original as wallpaper; light and dark chrome, 4 screen sizes, with and "
    "without a taskbar), a phone held sideways, a chat screenshot (the photo in a rounded "
    "bubble, light and dark themes), and the photo scaled to 40-80% and pasted at a random "
    "place over another original (plain, with a white frame, with a drop shadow, beside a "
    "second pasted photo). The picture search of the query profile (`picture_boxes`) was "
    "designed on samples of these same originals (every 7th and 15th photo): the second photo "
    "set below is the check on photos nobody looked at.",
    "- The wrong-original table leaves out edits that hold other originals on purpose "
    "(collages, pasted pictures, browser windows over a wallpaper original): for those a match "
    "with the other original is right.",
    "- Per-pair false-match rates from the tail are extrapolations of a normal fitted to the "
    "lower tail; they are estimates, not bounds. The union-bound column multiplies the per hash "
    "pair rate by every hash pair compared, which over-counts (views of one picture are alike).",
]


def _false_notes(results: Sequence[Result]) -> list[str]:
    notes = [
        "How to read this: *per-pair rate (95% upper)* is the observed count over the image "
        "pairs, with 3/pairs as the 95% upper bound when none is seen (a weak bound: about "
        "1e-6 here). The tail columns extrapolate instead. A normal is fitted, in probit space, "
        "to the lower tail (CDF between 1e-6 and 1e-2) of the distance distribution and read at "
        "the match distance: once for single hash pairs, multiplied by the hash pairs compared "
        "per image pair (a union bound, which ignores that views of one picture are correlated "
        "and so over-counts), and once fitted directly to the per-image-pair minimum distances. "
        "The last column takes the larger of the two, times one million enrolled images.",
        "",
        "Held-out check (thresholds are fixed, not tuned: the view profiles use the registry's "
        "PDQ distance 31; the even-numbered half of the distractors was used while designing "
        "the views, the odd half only for this report):",
        "",
        "| configuration | false matches, design half | false matches, held-out half |",
        "|---|---:|---:|",
    ]
    for r in results:
        notes.append(
            f"| {r.config.name} | {r.false_matches(~r.held_out)} | {r.false_matches(r.held_out)} |"
        )
    return notes


_SHORT = {
    "A": "photometric",
    "B": "flips, turns",
    "C": "borders, screens",
    "D": "crops, rotations",
    "E": "overlays",
    "F": "30% crops, collages",
    "G": "app screenshots",
    "H": "picture in picture",
}


def _plots(results: Sequence[Result], edit_index: np.ndarray, out: Path) -> tuple[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tier_of = np.array([EDITS[i].tier for i in edit_index])
    tiers = list(TIERS)
    fig, ax = plt.subplots(figsize=(8, 4.6))
    width = 0.8 / len(results)
    for j, r in enumerate(results):
        found = r.found()
        vals, errs = [], [[], []]
        for t in tiers:
            mask = tier_of == t
            k, n = int(found[mask].sum()), int(mask.sum())
            lo, hi = wilson_interval(k, n)
            p = k / n if n else 0
            vals.append(100 * p)
            errs[0].append(max(0.0, 100 * (p - lo)))
            errs[1].append(max(0.0, 100 * (hi - p)))
        xs = np.arange(len(tiers)) + j * width
        ax.bar(xs, vals, width, yerr=errs, capsize=3, label=r.config.name)
    centres = np.arange(len(tiers)) + width * (len(results) - 1) / 2
    ax.hlines(
        [TARGETS[t] for t in tiers],
        centres - 0.45,
        centres + 0.45,
        colors="k",
        linestyles=":",
        label="target",
    )
    ax.set_xticks(centres)
    ax.set_xticklabels([f"{t}\n{_SHORT[t]}" for t in tiers], fontsize=8)
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 105)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize=8)
    ax.set_title("Recall per tier (Wilson 95% intervals)")
    fig.tight_layout()
    recall_png = "quality_recall.png"
    fig.savefig(out / recall_png, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    bins = np.arange(0, 258, 2)
    for ax, r in zip(axes[0], results, strict=True):
        own = r.own[r.own <= 256]
        dis = np.minimum(r.distractors.pair_min, 256).ravel()
        ax.hist(own, bins=bins, alpha=0.6, density=True, label="true pairs (edit, its original)")
        ax.hist(dis, bins=bins, alpha=0.6, density=True, label="distractor pairs")
        ax.axvline(
            r.config.distance, color="k", ls="--", lw=1, label=f"match <= {r.config.distance}"
        )
        ax.set_yscale("log")
        ax.set_xlabel("smallest distance over the views of a pair (bits)")
        ax.set_title(r.config.name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    hist_png = "quality_distances.png"
    fig.savefig(out / hist_png, dpi=110)
    plt.close(fig)
    return recall_png, hist_png
