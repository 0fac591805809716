"""Actions flows can call by name. Each is a small function over the open transaction."""

from __future__ import annotations

from bot.pipeline import Action, ActionContext
from flows.events import ActionResult
from storage import repositories as repo


async def lookup_ward(ctx: ActionContext) -> ActionResult:
    """Find the ward for ``args.postcode``; sets the contact's postcode (and ward, if found)."""
    postcode = ctx.args.get("postcode", "")
    ward = await repo.ward_for_postcode(ctx.session, postcode=postcode)
    if ward is None:
        return ActionResult("not_found", {"contact.postcode": postcode or None})
    name = ward.name_cy if ctx.contact.language == "cy" and ward.name_cy else ward.name
    return ActionResult(
        "ok",
        {"ward_name": name, "contact.postcode": postcode, "contact.ward_code": ward.code},
    )


def builtin_actions() -> dict[str, Action]:
    """The registry the composition root starts from; features add their own."""
    return {"lookup_ward": lookup_ward}
