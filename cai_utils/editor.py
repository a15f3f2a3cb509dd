"""The constitution editor of notebook 01: ipywidgets over ``Constitution.edit``.

Pick a principle, edit its critique, revision and preference texts: every change is validated
at once, and **Save** writes the next version as ``NAME-VERSION.yaml`` in ``out_dir`` and makes
it the constitution notebooks 02-07 use (``workspace.choose_constitution``). The
next version is bumped from the version last saved by this editor (at first the edited file's
own version), so saving twice gives 1.1.0 then 1.2.0, and a file already there with other
content is never overwritten (the version is bumped past it). Nothing is edited or saved until
someone does so: ``apply`` is the headless path (CI), through the same code as the button.
"""

from __future__ import annotations

from pathlib import Path

from .constitution import (Constitution, ConstitutionError, as_constitution, bump_version,
                           load)

FIELDS = ("critique", "revision", "preference")


class ConstitutionEditor:
    """Widgets to edit one principle at a time and save validated new versions.

    ``current`` is the last saved version (at first the constitution given), ``path`` the last
    file written (None until a save).
    """

    def __init__(self, constitution: "str | Path | Constitution", out_dir: str | Path,
                 principle: str | None = None, part: str = "minor"):
        import ipywidgets as widgets

        self.original = self.current = as_constitution(constitution)
        self.out_dir = Path(out_dir)
        self.part = part
        self.path: Path | None = None
        ids = [p.id for p in self.current.principles]
        self.pick = widgets.Dropdown(options=ids, value=principle or ids[0],
                                     description="principle")
        self.boxes = {f: widgets.Textarea(layout=widgets.Layout(width="95%", height="70px"),
                                          description=f) for f in FIELDS}
        self.status = widgets.HTML()
        self.button = widgets.Button(description="Save new version", button_style="primary")
        self.show()
        self.pick.observe(self.show, names="value")
        for box in self.boxes.values():
            box.observe(self.revalidate, names="value")
        self.button.on_click(self.save)

    def widget(self):
        import ipywidgets as widgets

        return widgets.VBox([self.pick, *self.boxes.values(), self.button, self.status])

    def show(self, change=None) -> None:
        """Fill the boxes with the picked principle's texts, as last saved."""
        p = self.current.principle(self.pick.value)
        for field, box in self.boxes.items():
            box.value = getattr(p, field)
        self.revalidate()

    def next_version(self, candidate: Constitution) -> Constitution:
        """The candidate at a version whose file in out_dir is free or holds the same content."""
        while True:
            path = self.out_dir / f"{candidate.name}-{candidate.version}.yaml"
            try:
                if not path.exists() or load(path).hash == candidate.hash:
                    return candidate
            except ConstitutionError:
                pass
            candidate = candidate.edit(version=bump_version(candidate.version, self.part))

    def candidate(self) -> Constitution:
        """The last saved version with the boxes' texts, at the next version (validated)."""
        fields = {f: box.value for f, box in self.boxes.items()}
        edited = self.current.edit(self.pick.value,
                                   version=bump_version(self.current.version, self.part),
                                   **fields)
        return self.next_version(edited)

    def revalidate(self, change=None) -> Constitution | None:
        try:
            c = self.candidate()
        except ConstitutionError as err:
            self.status.value = "<b style='color:red'>invalid</b>: " + "<br>".join(err.problems)
            return None
        self.status.value = f"<b style='color:green'>valid</b>: {c.summary()}"
        return c

    def save(self, button=None) -> Path | None:
        """Write the candidate as NAME-VERSION.yaml; None (and nothing written) when the texts
        are invalid or unchanged."""
        c = self.revalidate()
        if c is None:
            return None
        if c.principle(self.pick.value) == self.current.principle(self.pick.value):
            self.status.value += "<br>nothing to save: no text changed"
            return None
        self.path = c.save(self.out_dir / f"{c.name}-{c.version}.yaml")
        self.current = c
        self.status.value += f"<br>saved to {self.path}"
        if button is not None:  # a person clicked Save: notebooks 02-07 use this version now
            from .workspace import choose_constitution

            choose_constitution(self.path)
            self.status.value += " (notebooks 02-07 use it now; workspace.reset_constitution() undoes)"
        return self.path

    def apply(self, principle: str, **fields: str) -> Path | None:
        """Edit and save without a person (headless runs): the same code path as the button,
        except that the saved file does not become the constitution notebooks 02-07 use."""
        self.pick.value = principle
        for field, value in fields.items():
            self.boxes[field].value = value
        return self.save()
