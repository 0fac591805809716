"""The admin UI's words are English today, and every one goes through ``_()`` (templates)
or :func:`gettext` (Python), so that a Welsh UI is a translation catalogue away: compile
``cy`` gettext messages and install them per request in :class:`admin.web.shell.Shell`
(``Environment.install_gettext_translations``), with ``ui_language`` set for ``<html lang>``.

(Residents' texts are another matter: they live in ``flows/catalogue.yaml``, in both
languages, because residents choose their language.)"""

from __future__ import annotations


def gettext(message: str) -> str:
    return message


def ngettext(singular: str, plural: str, n: int) -> str:
    return singular if n == 1 else plural


_ = gettext
