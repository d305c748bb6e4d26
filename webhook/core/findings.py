"""A finding: one way a Pod breaks a policy rule, and what admission does about it (the audit's unit)."""

from __future__ import annotations

from dataclasses import dataclass

ENFORCEMENTS = ("enforce", "warn", "audit")
KINDS = ("missing-entry", "missing-limits", "too-many-containers", "entry-not-allowed", "parameter-out-of-bounds",
         "invalid")
# What admission does to a Pod with the finding: injects what it lacks, sets the rule's default limits, denies it,
# admits it with a warning, or only reports it (audit). The first three are enforced: a stored Pod with such a
# finding is one admission would not have let be (it predates the rule, or the webhook failed open).
ADMISSION = ("inject", "default", "deny", "warn", "report")
ENFORCED = ("inject", "default", "deny")


@dataclass(frozen=True)
class Finding:
    rule: str  # the policy rule, "" for a Pod admission refuses for another reason (kind "invalid")
    kind: str
    message: str
    enforcement: str
    admission: str
    mandatory: bool = False  # a missing entry that a mandatory rule adds
    entries: tuple[str, ...] = ()  # the entries concerned (missing-entry, entry-not-allowed)

    def as_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "kind": self.kind, "message": self.message, "enforcement": self.enforcement,
                "admission": self.admission, "mandatory": self.mandatory, "entries": list(self.entries)}
