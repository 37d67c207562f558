"""Coded concepts for segment and ROI labels, so that a viewer knows what ``RightParotid`` is.

The codes come from DICOM's own table of segmentation property types (CID 7151, SNOMED CT, as
pydicom ships it), matched by name: ``SpinalCord``, ``spinal_cord`` and ``Spinal cord`` all find
"Spinal cord" (2748008); the category follows the table the type belongs to (lesions CID 7159,
tissues CID 7166, devices CID 7157, otherwise an anatomical structure). A leading or trailing
``Left``/``Right`` (or ``_L``/``_R``) becomes a laterality modifier, and ``Parotid`` also tries
``Parotid gland``. A class with no match keeps its name under a private coding scheme
(``99MEDSEG``) instead of being given a wrong code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from pydicom.sr.codedict import Code, codes

PRIVATE_SCHEME = "99MEDSEG"
_LATERALITY = {"left": codes.SCT.Left, "right": codes.SCT.Right, "l": codes.SCT.Left, "r": codes.SCT.Right}
_SUFFIXES_TRIED = ("", "gland")


@dataclass(frozen=True)
class SegmentConcept:
    """What a class is: a category, a type, and the laterality when the name gives one."""

    category: Code
    type: Code
    laterality: Code | None = None

    @property
    def is_standard(self) -> bool:
        return self.type.scheme_designator != PRIVATE_SCHEME


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@lru_cache(maxsize=1)
def _property_types() -> dict[str, Code]:
    table = codes.cid7151
    return {_key(keyword): getattr(table, keyword) for keyword in table.dir()}


@lru_cache(maxsize=1)
def _categories() -> dict[str, Code]:
    """Category of a property type (by code value) for the types that are not anatomical structures."""
    found = {}
    for table, category in ((codes.cid7166, codes.cid7150.Tissue), (codes.cid7157, codes.cid7150.PhysicalObject),
                            (codes.cid7159, codes.cid7150.MorphologicallyAbnormalStructure)):
        found.update({getattr(table, keyword).value: category for keyword in table.dir()})
    return found


def _words(name: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [w for w in re.split(r"[\s_\-.]+", spaced) if w]


def segment_concept(name: str) -> SegmentConcept:
    """The coded concept of class ``name`` (see the module docstring for the matching rules)."""
    words = _words(name)
    laterality = None
    for index in (0, -1):
        if len(words) > 1 and words[index].lower() in _LATERALITY:
            laterality = _LATERALITY[words.pop(index).lower()]
            break
    known = _property_types()
    for suffix in _SUFFIXES_TRIED:
        found = known.get(_key("".join(words)) + suffix)
        if found is not None:
            category = _categories().get(found.value, codes.cid7150.AnatomicalStructure)
            return SegmentConcept(category, found, laterality)
    private = Code(value=_key(name)[:16] or "class", scheme_designator=PRIVATE_SCHEME, meaning=name[:64])
    return SegmentConcept(codes.cid7150.AnatomicalStructure, private)
