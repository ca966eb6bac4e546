"""What the Dagster UI shows about a trained model: numbers it plots across versions, the
metrics table and the training curves (from the model card's report)."""

import io

import numpy as np

from mammo_dagster.core import metrics
from mammo_dagster.core.imaging import preprocess

from .markdown import md_image, md_table


def rounded(v, digits: int = 4):
    """Floats (also inside dicts) to `digits` decimals, for metadata a person reads."""
    if isinstance(v, dict):
        return {k: rounded(x, digits) for k, x in v.items()}
    return round(v, digits) if isinstance(v, float) else v


def holdout_metadata(card: dict) -> dict[str, float]:
    """Per flag, hold-out AUC, recall and accuracy and the threshold as plain numbers:
    Dagster plots numeric metadata across materializations, so model versions compare."""
    out: dict[str, float] = {}
    for flag, r in (card.get("holdout") or {}).items():
        if not r:
            continue
        for key in ("auc", "recall", "accuracy"):
            if r.get(key) is not None:
                out[f"holdout_{flag}_{key}"] = rounded(float(r[key]))
        studies = r.get("studies") or {}
        for key in ("auc", "recall"):
            if studies.get(key) is not None:
                out[f"holdout_{flag}_study_{key}"] = rounded(float(studies[key]))
    for flag, v in (card.get("thresholds") or {}).items():
        out[f"threshold_{flag}"] = rounded(float(v))
    return out


def _fmt(v) -> str:
    return "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _reports(card: dict):
    for split in ("validation", "holdout"):
        for flag, r in (card.get(split) or {}).items():
            if r:
                yield split, flag, r


def metrics_table(card: dict, split: str) -> str:
    """One split's counts and scores per flag. The confusion has a table of its own and
    each split one: the UI's Overview shows metadata values in a column ~400 px wide at
    1440 px, and a wider table is cut off there."""
    rows = [
        [flag, r["n"], r["positives"], _fmt(r["auc"]), _fmt(r["precision"]), _fmt(r["recall"]),
         _fmt(r["f1"])]
        for s, flag, r in _reports(card) if s == split
    ]  # fmt: skip
    return md_table(["flag", "n", "pos", "AUC", "prec.", "recall", "F1"], rows)


def confusion_table(card: dict) -> str:
    """Per split and flag: true/false positives and negatives at the chosen threshold."""
    rows = [
        [split, flag, *(r["confusion"][k] for k in ("tp", "fp", "fn", "tn"))]
        for split, flag, r in _reports(card)
    ]
    return md_table(["split", "flag", "tp", "fp", "fn", "tn"], rows)


def curves(card: dict, folder) -> str:
    """Loss curve and validation ROC curves as one PNG (markdown image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.load(folder / "validation.npz")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    hist = card["history"]
    ax1.plot([h["epoch"] for h in hist], [h["train_loss"] for h in hist], label="train")
    ax1.plot([h["epoch"] for h in hist], [h["valid_loss"] for h in hist], label="valid")
    ax1.set_xlabel("epoch")
    ax1.set_title("loss")
    ax1.legend()
    for k, flag in enumerate(preprocess.FLAGS):
        fpr, tpr = metrics.roc_curve(data["labels"][:, k], data["torch_probs"][:, k])
        auc = metrics.auc(data["labels"][:, k], data["torch_probs"][:, k])
        ax2.plot(fpr, tpr, label=f"{flag} (AUC {_fmt(auc)})")
    ax2.plot([0, 1], [0, 1], ":", color="gray")
    ax2.set_xlabel("false-positive rate")
    ax2.set_ylabel("true-positive rate")
    ax2.set_title("validation ROC")
    ax2.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    md = md_image(buf.getvalue(), "curves")
    plt.close(fig)
    return md
