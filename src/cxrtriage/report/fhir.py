"""The draft report as a FHIR ``DiagnosticReport`` with one ``Observation`` per model (``fhir.resources``).

FHIR release: R4B (4.3.0, the ``fhir.resources.R4B`` classes), a technical
correction of R4 (4.0.1) whose ``DiagnosticReport`` and ``Observation`` have
the same elements; every resource is validated by ``fhir.resources`` (pydantic)
when built, so an invalid one raises instead of being served.

Layout: the ``DiagnosticReport`` (category ``RAD``, code LOINC 18748-4
"Diagnostic imaging study") holds its ``Observation`` s as *contained*
resources referenced from ``result`` (``#obs-1``, ``#obs-2``...). Each
``Observation`` is one model's result: ``valueCodeableConcept`` the predicted
class, one ``component`` per class probability (``valueQuantity``, UCUM unit
``1``) and, for binary tasks, one for the decision threshold; ``method`` names
the model and its version; ``note`` carries the research-use statement. No
patient is referenced: the store holds de-identified data only.

Status: ``preliminary`` for a draft, ``final`` once a radiologist signed it
off (``resultsInterpreter`` then names them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cxrtriage import DISCLAIMER, __version__
from cxrtriage.report.dicom_out import ModelOutput

__all__ = ["FHIR_VERSION", "CONCEPT_SYSTEM", "diagnostic_report"]

#: FHIR version of the built resources.
FHIR_VERSION = "4.3.0"

#: Code system URI of the concepts without a LOINC code (model result, class probabilities, threshold).
CONCEPT_SYSTEM = "urn:cxrtriage:concept"

_LOINC = "http://loinc.org"
_UCUM = "http://unitsofmeasure.org"


def _cc(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _observation(i: int, r: ModelOutput, when: str, status: str) -> dict[str, Any]:
    comps: list[dict[str, Any]] = [
        {
            "code": _cc(CONCEPT_SYSTEM, f"probability-{cls}", f"Probability of {cls}"),
            "valueQuantity": {"value": float(p), "unit": "probability", "system": _UCUM, "code": "1"},
        }
        for cls, p in r.probabilities.items()
    ]
    if r.threshold is not None:
        comps.append(
            {
                "code": _cc(CONCEPT_SYSTEM, "decision-threshold", f"Decision threshold on {r.positive_class}"),
                "valueQuantity": {"value": float(r.threshold), "unit": "probability", "system": _UCUM, "code": "1"},
            }
        )
    task = getattr(r, "task", None)
    return {
        "resourceType": "Observation",
        "id": f"obs-{i}",
        "status": status,
        "category": [
            _cc("http://terminology.hl7.org/CodeSystem/observation-category", "imaging", "Imaging"),
        ],
        "code": _cc(
            CONCEPT_SYSTEM, f"model-result-{task or 'classification'}", f"AI model result ({task or 'classification'})"
        ),
        "effectiveDateTime": when,
        "valueCodeableConcept": _cc(CONCEPT_SYSTEM, f"class-{r.label}", r.label),
        "component": comps,
        "method": {"text": f"{r.model_name} {r.model_version} (cxrtriage {__version__})"},
        "note": [{"text": DISCLAIMER}],
    }


def diagnostic_report(
    study_id: str,
    received_at: str,
    results: Sequence[ModelOutput],
    *,
    report: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A validated FHIR ``DiagnosticReport`` (JSON-ready dict) of one study's model results.

    Parameters
    ----------
    study_id : str
        The study record's id (``DiagnosticReport.id`` and its identifier).
    received_at : str
        ISO 8601 time the image was received (``effectiveDateTime``, ``issued``).
    results : sequence of ModelOutput
        Per-model results; those with ``applicable = False`` are left out.
    report : dict, optional
        The structured report (:mod:`cxrtriage.report.draft`): its ``status``
        (``draft`` / ``signed``), ``signed_by``, ``impression``.

    Returns
    -------
    dict
        ``DiagnosticReport`` as FHIR JSON (``resourceType`` first), validated by ``fhir.resources``.

    Raises
    ------
    pydantic.ValidationError
        The resource would not be valid FHIR (a bug, never bad input).
    """
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    report = report or {}
    signed = report.get("status") == "signed"
    status = "final" if signed else "preliminary"
    shown = [r for r in results if getattr(r, "applicable", True) is not False]
    observations = [_observation(i + 1, r, received_at, status) for i, r in enumerate(shown)]
    labels = "; ".join(f"{r.model_name}: {r.label}" for r in shown)
    impression = report.get("impression") if signed else None
    conclusion = f"{impression} " if impression else ""
    conclusion += f"AI draft ({labels}). {DISCLAIMER}" if not signed else f"(AI: {labels}.) {DISCLAIMER}"
    body: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": study_id,
        "meta": {"tag": [{"system": CONCEPT_SYSTEM, "code": "ai-generated", "display": "AI generated, research use"}]},
        "identifier": [{"system": "urn:cxrtriage:study", "value": study_id}],
        "status": status,
        "category": [_cc("http://terminology.hl7.org/CodeSystem/v2-0074", "RAD", "Radiology")],
        "code": _cc(_LOINC, "18748-4", "Diagnostic imaging study"),
        "effectiveDateTime": received_at,
        "issued": received_at,
        "contained": observations,
        "result": [{"reference": f"#{o['id']}"} for o in observations],
        "conclusion": conclusion,
    }
    if signed and report.get("signed_by"):
        body["resultsInterpreter"] = [{"display": str(report["signed_by"])}]
    return DiagnosticReport.model_validate(body).model_dump(mode="json", exclude_none=True)
