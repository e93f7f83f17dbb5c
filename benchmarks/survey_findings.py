"""Reproduce the robustness survey's cited findings: ``fedaegis reproduce survey`` as a script.

``python benchmarks/survey_findings.py [--quick] [--output FILE.md] [--html FILE.html]`` runs
the same code (:mod:`fedaegis.orchestration.survey`, the findings' one home).
"""

from __future__ import annotations

import typer

from fedaegis.orchestration.survey import survey

if __name__ == "__main__":
    typer.run(survey)
