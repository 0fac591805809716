"""Native Telegram group polls as a domain: sending, answers, closing on time, and the result
posted to the group through the broadcast path (:mod:`flows.polls.service`)."""
