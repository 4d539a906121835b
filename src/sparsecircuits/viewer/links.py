"""Where each page lives: a URL on the live server, or a file name in a static export.

Every page links through one `Links`, so the same templates serve both; ids and unit names
are the only parts of a link that vary.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Links:
    static: bool = False  # file names in one folder instead of server paths

    def page(self, *parts: object) -> str:
        if self.static:
            return "-".join(str(part) for part in parts) + ".html"
        return "/" + "/".join(str(part) for part in parts)

    def index(self) -> str:
        return "index.html" if self.static else "/"

    def model(self, run_id: int) -> str:
        return self.page("model", run_id)

    def atlas(self, run_id: int) -> str:
        return self.page("circuits", run_id)

    def circuit(self, circuit_id: int) -> str:
        return self.page("circuit", circuit_id)

    def units(self, run_id: int) -> str:
        return self.page("units", run_id)

    def unit(self, run_id: int, unit: str) -> str:
        return self.page("unit", run_id, unit)

    def prompt(self, run_id: int) -> str | None:
        """The prompt page runs the model: the live server has it, an export does not."""
        return None if self.static else self.page("prompt", run_id)

    def asset(self, name: str) -> str:
        return f"static/{name}" if self.static else f"/static/{name}"
