"""Needs assessments: residents rank local priorities by SMS or Telegram, optionally say a
little about themselves, and the council sees who has (and hasn't) been heard against the
census, weighs the answers to the population, and invites the missing people back."""
