"""Study mixes of synthetic archives: how often each kind of study occurs.

Its own module, without numpy, so that the `mammo` command can offer the names cheaply.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class StudyMix:
    """How often each study kind occurs: by whether the patient carries a clip, and how
    many patients arrive with one."""

    no_biopsy: dict[str, float]
    after_biopsy: dict[str, float]
    prior_clip: float


#: Named study mixes. "enriched" (the default) is tuned for ~55/20/15/10 % of
#: neither/marker/mag/both images so that small archives hold every class (see
#: tests/test_synthetic.py); "screening" is an archive as a screening practice keeps it,
#: where most studies are screening or follow-up and flagged images are rare (~6 % marker,
#: ~5 % mag).
MIXES: dict[str, StudyMix] = {
    "enriched": StudyMix(
        {"screening": 0.45, "diagnostic": 0.45, "stereo": 0.06, "needle_loc": 0.04},
        {"followup": 0.28, "followup_diag": 0.67, "stereo": 0.02, "needle_loc": 0.03},
        0.4,
    ),
    "screening": StudyMix(
        {"screening": 0.89, "diagnostic": 0.09, "stereo": 0.012, "needle_loc": 0.008},
        {"followup": 0.8, "followup_diag": 0.17, "stereo": 0.01, "needle_loc": 0.02},
        0.06,
    ),
}


def study_mix(name: str) -> StudyMix:
    """The mix called `name`, or a ValueError that lists the names."""
    if name not in MIXES:
        raise ValueError(f"unknown study mix {name!r}; choose from {', '.join(MIXES)}")
    return MIXES[name]
