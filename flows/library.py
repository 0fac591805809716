"""Loading flows from YAML, validated, with cross-flow references checked, together with the
text catalogue (:mod:`flows.catalogue`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flows.catalogue import OVERRIDE_NAME, Catalogue, CatalogueError, load_catalogue
from flows.model import ActionNode, ChoiceNode, Flow, Option

BUILTIN_DIR = Path(__file__).parent / "library"
REQUIRED_FLOWS = ("onboarding", "menu", "language")


class FlowError(Exception):
    """A flow file is invalid; the message names the file and the problem."""


@dataclass(frozen=True)
class FlowLibrary:
    flows: Mapping[str, Flow]
    catalogue: Catalogue

    def flow(self, flow_id: str) -> Flow:
        return self.flows[flow_id]

    def trigger(self, word: str) -> Flow | None:
        """The flow ``word`` starts. Where flows share a word, the one loaded last wins: a
        council's own flow (``CIVICBOT_FLOWS_DIR``) takes a shipped domain's keyword."""
        for flow in reversed(list(self.flows.values())):
            if word in flow.triggers:
                return flow
        return None

    def trigger_with_argument(self, text: str) -> tuple[Flow, dict[str, str]] | None:
        """The flow a trigger word followed by more words starts (``INTERESTED 12``), with
        those words in its ``argument`` variable; None unless that flow takes an argument."""
        head, _, rest = text.partition(" ")
        flow = self.trigger(head) if rest.strip() else None
        if flow is None or flow.argument is None:
            return None
        return flow, {flow.argument: rest.strip()}

    def actions(self) -> set[str]:
        return {
            node.action
            for flow in self.flows.values()
            for node in flow.nodes.values()
            if isinstance(node, ActionNode)
        }


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise FlowError(f"{path.name}: cannot read YAML: {exc}") from exc


def load_library(
    directories: Iterable[Path] = (BUILTIN_DIR,), known_actions: Iterable[str] | None = None
) -> FlowLibrary:
    """Load every ``*.yaml`` flow from the directories, in order; a later directory may replace
    a flow by id. A ``catalogue.yaml`` in a directory replaces catalogue texts."""
    directories = list(directories)
    flows: dict[str, Flow] = {}
    try:
        catalogue = load_catalogue(d for d in directories if d != BUILTIN_DIR)
    except CatalogueError as exc:
        raise FlowError(str(exc)) from None
    for directory in directories:
        for path in sorted(directory.glob("*.yaml")):
            if path.name == OVERRIDE_NAME:
                continue
            data = _read_yaml(path)
            try:
                flow = Flow.model_validate(data)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise FlowError(f"{path.name}: {where}: {first['msg']}") from None
            flows[flow.id] = flow
    if "menu" in flows:
        flows["menu"] = _with_menu_entries(flows["menu"], flows.values())
    for flow in flows.values():
        missing = flow.flow_references() - flows.keys()
        if missing:
            raise FlowError(f"flow {flow.id!r} jumps to unknown flow(s) {sorted(missing)}")
    for required in REQUIRED_FLOWS:
        if required not in flows:
            raise FlowError(f"the {required!r} flow is missing")
    library = FlowLibrary(flows=flows, catalogue=catalogue)
    if known_actions is not None:
        unknown = library.actions() - set(known_actions)
        if unknown:
            raise FlowError(f"flows call unregistered action(s) {sorted(unknown)}")
    return library


def _with_menu_entries(menu: Flow, flows: Iterable[Flow]) -> Flow:
    """The main menu with an option for each loaded flow that asks for one (``menu:``),
    after the menu's own options, in load order."""
    node = menu.nodes.get(menu.start)
    if not isinstance(node, ChoiceNode) or node.options_from is not None:
        return menu
    present = {o.next for o in node.options}
    extra = [
        Option(id=flow.id[:32], text=flow.menu, next=f"flow:{flow.id}")
        for flow in flows
        if flow.menu is not None and flow.id != menu.id and f"flow:{flow.id}" not in present
    ]
    if not extra:
        return menu
    if len(node.options) + len(extra) > 12:
        raise FlowError(f"the menu can hold 12 options, not {len(node.options) + len(extra)}")
    options = [*node.options, *extra]
    nodes = {**menu.nodes, menu.start: node.model_copy(update={"options": options})}
    return menu.model_copy(update={"nodes": nodes})
