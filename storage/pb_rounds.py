"""Participatory-budgeting rounds: a round as defined in its YAML file (or imported from a
Pabulib file), its projects, residents' ideas (proposals) and ballots. Repositories take a
session and never commit; the caller owns the transaction.

One ballot per contact per round is the unique constraint ``uq_pb_ballot_contact``; a cast
replaces the stored ballot (the latest counts). Ballots of imported rounds, and ballots whose
voter used FORGET, have no contact.

What FORGET does here (registered below):

- ``pb_ballots`` stay counted, detached: the contact is blanked; the choices, the ward and the
  random ``voter_key`` (the voter id in exports, never derived from the person) are kept, and
  so is the receipt code, which only the voter holds (it lets them check their ballot was
  counted, and nothing links it to them once the contact is gone);
- ``pb_proposals`` (ideas residents sent) keep their status and any project they became, with
  the contact and the person's own words blanked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from storage.erasure import Rule, not_personal, register, table_of
from storage.types import UTCDateTime


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class RoundStatus:
    DRAFT = "draft"  # defined; voting has not opened
    VOTING = "voting"  # voting has opened (rules locked)
    CLOSED = "closed"  # ballots frozen, results stored


class PbRound(SQLModel, table=True):
    """A PB round. ``wards`` None means every ward. ``ballot`` is the file's ballot mapping
    (``{"type": "approval", "min": 1, "max": 3}``, ``knapsack``, ``cumulative`` with
    ``points``, ``ranked`` with ``top``). ``opened_at`` / ``closed_at`` record that voting
    was opened / closed (by the scheduler at the phase times, or by a facilitator), so both
    are done once. ``results`` is the frozen tally (the ``pb round results --json`` object).
    ``pabulib_meta`` keeps every META key of an imported file (values as text) so that an
    export gives them back."""

    __tablename__ = "pb_rounds"

    id: str = Field(primary_key=True, max_length=64)
    title: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    wards: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    budget: int = Field(sa_column=Column(BigInteger(), nullable=False))
    currency: str = Field(default="GBP", max_length=8)
    ballot: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    rule: str = Field(max_length=16)
    verification: str = Field(default="none", max_length=16)
    proposals_open: datetime | None = _ts()
    proposals_close: datetime | None = _ts()
    voting_open: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    voting_close: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    status: str = Field(default=RoundStatus.DRAFT, max_length=16, index=True)
    imported: bool = Field(default=False)
    pabulib_meta: dict[str, str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    results: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    opened_at: datetime | None = _ts()
    closed_at: datetime | None = _ts()
    # Announcements sent (``proposals``, ``voting``, ``results``; migration 0410): each is
    # sent once, and one a crash interrupted is sent by the scheduler's next run.
    announced: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # An imported file's column order: {"projects": [...], "votes": [...]} (migration 0410).
    pabulib_columns: dict[str, list[str]] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True)
    )

    def covers(self, ward_code: str | None) -> bool:
        if ward_code is None:
            return False
        return self.wards is None or ward_code in self.wards


class PbProject(SQLModel, table=True):
    """A project on a round's ballot, in the order residents see (``position``, from 1).
    ``extra`` keeps an imported file's other PROJECTS columns (text) for a lossless export."""

    __tablename__ = "pb_projects"

    round_id: str = Field(foreign_key="pb_rounds.id", primary_key=True, max_length=64)
    id: str = Field(primary_key=True, max_length=64)
    position: int
    title: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    summary: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    cost: int = Field(sa_column=Column(BigInteger(), nullable=False))
    ward_code: str | None = Field(default=None, max_length=32)
    category: str | None = Field(default=None, max_length=200)
    extra: dict[str, str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # Set when the project came from a resident's idea (``pb proposals accept``).
    proposal_id: int | None = Field(default=None)


class PbBallot(SQLModel, table=True):
    """A ballot: ``vote`` is the project ids (approval, knapsack: as chosen; ranked: best
    first; cumulative: the projects given points) and ``points`` the points per project of
    ``vote`` (cumulative only). ``voter_key`` is random (the voter id in a Pabulib export, or
    the file's own voter id for an imported round). ``extra`` keeps an imported file's other
    VOTES columns. ``ward_code`` is the voter's ward when they cast it."""

    __tablename__ = "pb_ballots"
    __table_args__ = (
        UniqueConstraint("round_id", "contact_id", name="uq_pb_ballot_contact"),
        UniqueConstraint("round_id", "voter_key", name="uq_pb_ballot_voter_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    round_id: str = Field(foreign_key="pb_rounds.id", index=True, max_length=64)
    contact_id: int | None = Field(default=None, foreign_key="contacts.id", index=True)
    voter_key: str = Field(max_length=64)
    vote: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    points: list[int] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    ward_code: str | None = Field(default=None, max_length=32)
    channel: str | None = Field(default=None, max_length=32)
    receipt: str | None = Field(default=None, max_length=16)
    extra: dict[str, str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    cast_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class ProposalStatus:
    NEW = "new"
    ACCEPTED = "accepted"


class PbProposal(SQLModel, table=True):
    """A resident's idea for a round, sent by chat in the ideas phase (title, then what and
    where). ``project_id`` is set when a facilitator accepts it as a project."""

    __tablename__ = "pb_proposals"

    id: int | None = Field(default=None, primary_key=True)
    round_id: str = Field(foreign_key="pb_rounds.id", index=True, max_length=64)
    contact_id: int | None = Field(default=None, foreign_key="contacts.id", index=True)
    ward_code: str | None = Field(default=None, max_length=32)
    title: str = Field(default="", max_length=200)
    content: str = Field(default="", max_length=1000)
    status: str = Field(default=ProposalStatus.NEW, max_length=16)
    project_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


# ---- what FORGET does (storage/erasure.py) ----------------------------------------------------
register(
    Rule(
        table_of(PbBallot),
        blank={"contact_id": None, "channel": None},
        keeps={
            "voter_key": "random, never derived from the person: the voter id in exports",
            "receipt": "a random code only the voter holds; nothing links it to them after",
        },
    )
)
register(Rule(table_of(PbProposal), blank={"contact_id": None, "title": "", "content": ""}))
not_personal(
    table_of(PbProject),
    "projects on a public ballot; a resident's idea accepted as a project is published text",
)
