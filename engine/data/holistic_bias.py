"""HolisticBias (Smith et al., 2022): sentences composed from descriptor, noun and template lists.

Upstream ships lists, not sentences; this module re-implements the documented composition
(holistic_bias/src/sentences.py in facebookresearch/ResponsibleNLP, without the random stylistic
variants): noun phrases are
  - each noun alone ("a woman": axis "null", a control),
  - each descriptor alone ("Deaf"), used only by templates that do not need a noun,
  - "{article} {descriptor} {noun}" for every noun whose gender agrees with the descriptor's,
  - each standalone noun phrase ("a wheelchair user", "{article} {noun} with a disability"),
and every noun phrase fills every template (26 in v1.1). Filters keep the product small.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from engine.data._rows import JsonLocator, RowSink, display_name, load_json_document, resolve_path, show_value
from engine.data.types import DataValidationError, LoadReport

VERSIONS = ("v1.0", "v1.1")
NONE = "(none)"
NO_PREFERENCE = "no_data"


class NounPhrase(NamedTuple):
    axis: str  # "null" for the noun-only controls
    bucket: str
    descriptor: str
    descriptor_preference: str  # "reviewed" | "dispreferred" | "polarizing" | "no_data"
    noun: str  # NONE when the phrase has no separate noun
    noun_gender: str
    singular: str
    plural: str
    phrase_type: str  # "noun" | "descriptor" | "descriptor_noun" | "noun_descriptor" | "fixed_phrase"


# A NamedTuple, not a frozen dataclass: the full product is ~500k sentences and tuple
# construction is several times cheaper.
class HolisticBiasSentence(NamedTuple):
    text: str
    axis: str
    bucket: str
    descriptor: str
    descriptor_preference: str
    noun: str
    noun_gender: str
    noun_phrase: str
    phrase_type: str
    template: str

    @property
    def split_key(self) -> str:
        # Sentences about one descriptor are near-duplicates (same words, other template / noun).
        return f"holistic_bias/{self.axis}/{self.descriptor}"


@dataclass(frozen=True)
class HolisticBiasLists:
    """The four validated upstream lists."""

    descriptors: dict[str, dict[str, list[dict[str, Any]]]]  # axis -> bucket -> [descriptor obj]
    nouns: dict[str, list[tuple[str, str]]]  # gender -> [(singular, plural)]
    templates: dict[str, dict[str, Any]]  # template -> options (must_be_noun, first_turn_only)
    standalone: dict[str, list[dict[str, Any]]]  # axis -> [noun phrase obj]


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _load(folder: Path, filename: str) -> tuple[Any, JsonLocator, str]:
    file = folder / filename
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing HolisticBias list (a version folder holds {filename} and 3 others)")
    doc, text = load_json_document(file)
    return doc, JsonLocator(text), display_name(file)


def _validate_lists(folder: Path, sink: RowSink) -> HolisticBiasLists:
    nouns_doc, where, name = _load(folder, "nouns.json")
    nouns: dict[str, list[tuple[str, str]]] = {}
    if not isinstance(nouns_doc, dict):
        raise DataValidationError(name, 1, "expected {gender: [[singular, plural], ...]}")
    for gender, pairs in nouns_doc.items():
        kept = []
        for i, pair in enumerate(pairs if isinstance(pairs, list) else [pairs]):
            if isinstance(pair, list) and len(pair) == 2 and all(isinstance(w, str) and w.strip() for w in pair):
                kept.append((pair[0], pair[1]))
                sink.ok()
            else:
                sink.bad(
                    name,
                    where.line(gender),
                    f"nouns[{gender!r}][{i}] must be [singular, plural] strings, got {show_value(pair)}",
                )
        nouns[gender] = kept

    desc_doc, where, name = _load(folder, "descriptors.json")
    if not isinstance(desc_doc, dict):
        raise DataValidationError(name, 1, "expected {axis: {bucket: [descriptor, ...]}}")
    descriptors: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for axis, buckets in desc_doc.items():
        if not isinstance(buckets, dict):
            sink.bad(name, where.line(axis), f"axis {axis!r} must map bucket names to descriptor lists")
            continue
        descriptors[axis] = {}
        for bucket, entries in buckets.items():
            kept_d = []
            for i, entry in enumerate(entries if isinstance(entries, list) else [entries]):
                obj = {"descriptor": entry} if isinstance(entry, str) else entry
                problem = None
                if (
                    not isinstance(obj, dict)
                    or not isinstance(obj.get("descriptor"), str)
                    or not obj["descriptor"].strip()
                ):
                    problem = "must be a string or an object with a non-empty 'descriptor'"
                elif "gender" in obj and obj["gender"] not in nouns:
                    problem = f"'gender' must be one of {sorted(nouns)}, got {obj['gender']!r}"
                if problem:
                    sink.bad(
                        name,
                        where.line(axis, bucket),
                        f"descriptors[{axis!r}][{bucket!r}][{i}] {problem}, got {show_value(entry)}",
                    )
                    continue
                kept_d.append(obj)
                sink.ok()
            descriptors[axis][bucket] = kept_d

    tmpl_doc, where, name = _load(folder, "sentence_templates.json")
    if not isinstance(tmpl_doc, dict):
        raise DataValidationError(name, 1, "expected {template: {options}}")
    templates: dict[str, dict[str, Any]] = {}
    for template, options in tmpl_doc.items():
        slots = [s for s in ("{noun_phrase}", "{plural_noun_phrase}") if s in template]
        if len(slots) != 1 or not isinstance(options, dict):
            sink.bad(
                name,
                where.line(template),
                f"template {template!r} must contain exactly one of {{noun_phrase}} / {{plural_noun_phrase}} "
                "and map to an options object",
            )
            continue
        templates[template] = options
        sink.ok()

    sa_doc, where, name = _load(folder, "standalone_noun_phrases.json")
    if not isinstance(sa_doc, dict):
        raise DataValidationError(name, 1, "expected {axis: [noun phrase, ...]}")
    standalone: dict[str, list[dict[str, Any]]] = {}
    for axis, entries in sa_doc.items():
        kept_s = []
        for i, entry in enumerate(entries if isinstance(entries, list) else [entries]):
            obj = {"noun_phrase": entry} if isinstance(entry, str) else entry
            if (
                not isinstance(obj, dict)
                or not isinstance(obj.get("noun_phrase"), str)
                or not obj["noun_phrase"].strip()
            ):
                sink.bad(
                    name,
                    where.line(axis),
                    f"standalone[{axis!r}][{i}] must be a string or an object with 'noun_phrase', got {show_value(entry)}",
                )
                continue
            kept_s.append(obj)
            sink.ok()
        standalone[axis] = kept_s
    return HolisticBiasLists(descriptors, nouns, templates, standalone)


def noun_phrases(lists: HolisticBiasLists) -> Iterator[NounPhrase]:
    """All noun phrases, in upstream's four kinds (see the module docstring)."""
    all_nouns = [(g, s, p) for g, pairs in lists.nouns.items() for s, p in pairs]
    for gender, noun, plural in all_nouns:
        yield NounPhrase("null", NONE, NONE, NONE, noun, gender, f"{article(noun)} {noun}", plural, "noun")
    for axis, buckets in lists.descriptors.items():
        for bucket, entries in buckets.items():
            for obj in entries:
                desc = obj["descriptor"]
                pref = obj.get("preference", NO_PREFERENCE)
                yield NounPhrase(axis, bucket, desc, pref, NONE, NONE, desc, desc, "descriptor")
                art = obj.get("article", article(desc))
                for gender, noun, plural in all_nouns:
                    if obj.get("gender", gender) != gender:
                        continue  # "female" never goes with "man"
                    yield NounPhrase(
                        axis,
                        bucket,
                        desc,
                        pref,
                        noun,
                        gender,
                        f"{art} {desc} {noun}",
                        f"{desc} {plural}",
                        "descriptor_noun",
                    )
    for axis, entries in lists.standalone.items():
        for obj in entries:
            phrase = obj["noun_phrase"]
            plural_phrase = obj.get("plural_noun_phrase", phrase)
            pref = obj.get("preference", NO_PREFERENCE)
            if "{noun}" in phrase:
                desc = phrase.format(article="", noun="").strip()
                for gender, noun, plural in all_nouns:
                    yield NounPhrase(
                        axis,
                        NONE,
                        desc,
                        pref,
                        noun,
                        gender,
                        phrase.format(article=article(noun), noun=noun),
                        plural_phrase.format(article="", noun=plural).strip(),
                        "noun_descriptor",
                    )
            else:
                yield NounPhrase(axis, NONE, phrase, pref, NONE, "neutral", phrase, plural_phrase, "fixed_phrase")


def compose(
    lists: HolisticBiasLists,
    templates: Sequence[str] | None = None,
    nouns: Sequence[str] | None = None,
    axes: Sequence[str] | None = None,
    include_noun_controls: bool = False,
) -> Iterator[HolisticBiasSentence]:
    """Fill templates with noun phrases. `nouns` keeps phrases whose noun is listed (phrases with no
    separate noun always stay); noun-only controls ("I'm a woman.") only with include_noun_controls."""
    chosen = lists.templates if templates is None else {t: lists.templates[t] for t in templates}
    noun_set = set(nouns) if nouns is not None else None
    for np_ in noun_phrases(lists):
        if np_.axis == "null" and not include_noun_controls:
            continue
        if axes is not None and np_.axis not in axes and np_.axis != "null":
            continue
        if noun_set is not None and np_.noun != NONE and np_.noun not in noun_set:
            continue
        for template, options in chosen.items():
            if np_.noun == NONE and options.get("must_be_noun", False):
                continue  # "What do you think about Deaf?" is not a sentence
            plural = "{plural_noun_phrase}" in template
            phrase = np_.plural if plural else np_.singular
            text = template.replace("{plural_noun_phrase}" if plural else "{noun_phrase}", phrase)
            yield HolisticBiasSentence(
                text,
                np_.axis,
                np_.bucket,
                np_.descriptor,
                np_.descriptor_preference,
                np_.noun,
                np_.noun_gender,
                phrase,
                np_.phrase_type,
                template,
            )


def load_holistic_bias_lists(
    dir: str | Path | None = None, version: str = "v1.1", strict: bool = False
) -> tuple[HolisticBiasLists, LoadReport]:
    """Validate the four lists of one version; each accepted list entry counts as one row."""
    if version not in VERSIONS:
        raise ValueError(f"HolisticBias version must be one of {VERSIONS}, got {version!r}")
    root = resolve_path(dir, "holistic_bias")
    folder = root / version if (root / version).is_dir() else root
    report = LoadReport()
    lists = _validate_lists(folder, RowSink(report, strict))
    return lists, report


def load_holistic_bias(
    dir: str | Path | None = None,
    version: str = "v1.1",
    templates: Sequence[str] | None = None,
    nouns: Sequence[str] | None = None,
    axes: Sequence[str] | None = None,
    include_noun_controls: bool = False,
    strict: bool = False,
) -> tuple[list[HolisticBiasSentence], LoadReport]:
    """Composed HolisticBias sentences (bundled lists when dir is None).

    The full product is ~500k sentences; pass `templates`, `nouns` and/or `axes` to compose a subset.
    The LoadReport counts validated list entries (descriptors, nouns, templates, standalone phrases).
    """
    lists, report = load_holistic_bias_lists(dir, version, strict)
    unknown = [t for t in (templates or ()) if t not in lists.templates]
    if unknown:
        raise ValueError(f"templates {unknown} are not in HolisticBias {version}; choose from {list(lists.templates)}")
    unknown_axes = [a for a in (axes or ()) if a not in lists.descriptors and a not in lists.standalone]
    if unknown_axes:
        raise ValueError(
            f"axes {unknown_axes} are not in HolisticBias {version}; choose from {sorted(lists.descriptors)}"
        )
    return list(compose(lists, templates, nouns, axes, include_noun_controls)), report
