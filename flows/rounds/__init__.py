"""Participatory-budgeting rounds: definition, lifecycle, voting by chat."""
