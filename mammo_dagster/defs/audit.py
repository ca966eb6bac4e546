"""The header-vs-image audit: how far the DICOM headers can be trusted, per vendor."""

import dagster as dg

from mammo_dagster.core.model.modelstore import read_current
from mammo_dagster.core.store.audit import header_baseline, write_audit

from .markdown import md_table
from .model import image_predictions, labels
from .resources import MammoHome, StoreResource


def _rates_md(rates: list[dict]) -> str:
    if not rates:
        return "(no images)"
    return md_table(list(rates[0]), [list(r.values()) for r in rates])


@dg.asset(group_name="model", deps=[image_predictions, labels], kinds={"duckdb", "csv"})
def header_audit(paths: MammoHome, store: StoreResource) -> dg.MaterializeResult:
    """Per image: what the header says (mag/spot codes, magnification factor, paddle,
    descriptions) vs what the current model sees vs the label; disagreement rates per
    vendor and model; the header-only rule scored on the labels."""
    home = paths.data
    current = read_current(home.models)
    out = home.predictions / "header_audit.csv"
    db = store.store()
    n, bad, rates = write_audit(db, current.version if current else None, out)
    baseline = header_baseline(db)
    return dg.MaterializeResult(
        metadata={
            "csv": dg.MetadataValue.path(str(out)),
            "images": n,
            "disagreements": bad,
            "model_version": current.version if current else "none",
            "rates_by_vendor": dg.MetadataValue.md(_rates_md(rates)),
            "header_rule_on_labels": dg.MetadataValue.json(
                {
                    flag: {
                        k: r[k] for k in ("n", "positives", "precision", "recall", "f1", "accuracy")
                    }
                    for flag, r in baseline.items()
                }
            ),  # fmt: skip
        }
    )
