"""One vocabulary of demographic axes across benchmarks.

Each benchmark names its categories differently ("Disability_status", "ability", "disability");
mapping them onto one axis name lets a run train on BOLD + HolisticBias prompts and be evaluated
per axis on BBQ / CrowS-Pairs / StereoSet with the same group labels.
"""

from __future__ import annotations

BBQ_AXES: dict[str, str] = {
    "Age": "age",
    "Disability_status": "disability",
    "Gender_identity": "gender",
    "Nationality": "nationality",
    "Physical_appearance": "physical_appearance",
    "Race_ethnicity": "race",
    "Race_x_SES": "race_x_socioeconomic",
    "Race_x_gender": "race_x_gender",
    "Religion": "religion",
    "SES": "socioeconomic",
    "Sexual_orientation": "sexual_orientation",
}

BOLD_AXES: dict[str, str] = {
    "gender": "gender",
    "race": "race",
    "religious_ideology": "religion",
    "political_ideology": "political_ideology",
    "profession": "profession",
}

HOLISTIC_BIAS_AXES: dict[str, str] = {
    "ability": "disability",
    "age": "age",
    "body_type": "physical_appearance",
    "characteristics": "characteristics",
    "cultural": "cultural",
    "gender_and_sex": "gender",
    "nationality": "nationality",
    "nonce": "nonce",
    "political_ideologies": "political_ideology",
    "race_ethnicity": "race",
    "religion": "religion",
    "sexual_orientation": "sexual_orientation",
    "socioeconomic_class": "socioeconomic",
}

CROWS_PAIRS_AXES: dict[str, str] = {
    "race-color": "race",
    "gender": "gender",
    "socioeconomic": "socioeconomic",
    "nationality": "nationality",
    "religion": "religion",
    "age": "age",
    "sexual-orientation": "sexual_orientation",
    "physical-appearance": "physical_appearance",
    "disability": "disability",
}

STEREOSET_AXES: dict[str, str] = {
    "race": "race",
    "gender": "gender",
    "religion": "religion",
    "profession": "profession",
}

# The default GRPO prompt set's groups: axes that BOLD and/or HolisticBias cover with hundreds of
# prompts each, so no group is starved in a batch.
DEFAULT_BIAS_AXES: tuple[str, ...] = ("gender", "race", "religion", "age", "disability", "sexual_orientation")


def axis_of(mapping: dict[str, str], name: str) -> str:
    """Canonical axis for a dataset-specific category; unknown names pass through lower-cased."""
    return mapping.get(name, name.lower())
