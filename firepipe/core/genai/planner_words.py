"""The planner's vocabulary and its reader of simple English: tokens, number words, families,
durations, shares, and the columns of a custom table (grammar: firepipe.core.genai.planner)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from firepipe.core.genai.tabular import OUTPUT_FORMATS

Quantity = int | float | None  # devices, a share of all devices, or neither


def _split(words: str) -> list[str]:
    return words.split()


QUESTION_WORDS = frozenset(
    _split(
        "what how why which where when who whom whose does do is are can could should would "
        "explain describe tell"
    )
)
VALIDATE_VERBS = frozenset({"validate", "check", "verify", "lint"})
FILLERS = frozenset(
    _split(
        "a an the and with of for in on to at by from each per every plus also please i we me "
        "us want need would like generate create make produce simulate give get build run some "
        "data dataset datasets table readings reading sensor sensors rows fires fire scenario "
        "scenarios type types mixed mix sized lasting long that have has having it them as new "
        "schema this these under against rules compliance requirements fine ok okay rest "
        "remaining remainder others"
    )
)
FAMILY_WORDS: dict[str, str] = {
    **dict.fromkeys(
        _split(
            "nuisance nuisances cooking cook cooks kitchen kitchens frying fry fried toasting "
            "toast toaster broiling broil grilling grill steam steamy shower showers bathroom "
            "bathrooms dust dusty cigarette cigarettes smoking smoker smokers tobacco candle "
            "candles"
        ),
        "nuisance",
    ),
    **dict.fromkeys(
        _split("smouldering smoldering smoulder smolder upholstery cotton"), "smouldering"
    ),
    **dict.fromkeys(_split("flaming flame flames blaze blazes"), "flaming"),
    **dict.fromkeys(_split("baseline baselines clean quiet normal background"), "baseline"),
}
SPEED_WORDS = frozenset(_split("slow slowly medium fast quick rapid ultra ultra-fast"))
DEVICE_NOUNS = frozenset(
    _split(
        "device devices room rooms home homes house houses apartment apartments detector "
        "detectors unit units sensor sensors"
    )
)
FAULT_WORDS = frozenset(_split("faulty fault faults failing broken defective"))
GPU_WORDS = frozenset(_split("gpu gpus cuda"))
SECONDS_PER = {
    **dict.fromkeys(_split("s sec secs second seconds"), 1),
    **dict.fromkeys(_split("m min mins minute minutes"), 60),
    **dict.fromkeys(_split("h hr hrs hour hours"), 3600),
}
FORMATS = frozenset(OUTPUT_FORMATS)
COMPLIANCE = {"gdpr": "GDPR", "hipaa": "HIPAA", "pci": "PCI-DSS", "pci-dss": "PCI-DSS"}
VAGUE_SHARES = {"few": 0.1, "some": 0.2}
_UNITS = {
    w: i
    for i, w in enumerate(
        _split(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen "
            "fourteen fifteen sixteen seventeen eighteen nineteen"
        )
    )
}
_TENS = {
    w: 10 * i
    for i, w in enumerate(_split("twenty thirty forty fifty sixty seventy eighty ninety"), 2)
}
_SCALES = {"dozen": 12, "hundred": 100, "thousand": 1000}
_TOKEN = re.compile(r"\d[\d,]*(?:\.\d+)?k?|%|[a-z]+(?:[-'][a-z]+)*|\?|\S")
_COLUMNS = re.compile(r"\b(?:columns?|fields?)\b\s*:?\s*", re.IGNORECASE)
_COLUMN = re.compile(
    r"\s*([A-Za-z_]\w*)\s*:\s*([A-Za-z]+)(?:\(\s*([^)]*?)\s*\))?((?:\s+(?:unique|nullable))*)"
    r"\s*(?:,|\band\b|(?=\s)|$)",
    re.IGNORECASE,
)


class PlanReadError(ValueError):
    """Words the reader could not read."""


# The settings a request gives once, as a refusal names them.
_SETTINGS = {
    "devices": "the number of devices",
    "duration_s": "the duration",
    "fault_share": "the share of faulty sensors",
    "seed": "the seed",
    "batch": "the batch",
    "rows": "the number of rows",
    "output_format": "the format",
}


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def columns(text: str) -> tuple[dict[str, Any] | None, str]:
    """`columns a:uuid, b:integer(18..90) unique, c:email nullable` as a schema, and the text
    without it; (None, text) when the text names no columns."""
    found = _COLUMNS.search(text)
    if found is None:
        return None, text
    fields, at = [], found.end()
    while at < len(text) and (item := _COLUMN.match(text, at)) is not None and item.end() > at:
        name, kind, bounds, flags = item.groups()
        constraints: dict[str, Any] = {flag: True for flag in flags.lower().split()}
        if bounds:
            low, sep, high = bounds.partition("..")
            if not sep:
                raise PlanReadError(f"cannot read: '({bounds})': bounds are (min..max)")
            constraints |= {k: _bound(v) for k, v in (("min", low), ("max", high)) if v.strip()}
        fields.append({"name": name, "type": kind.lower(), "constraints": constraints})
        at = item.end()
    if not fields:
        raise PlanReadError(f"cannot read: {text[found.start() :]!r}: columns are name:type, ...")
    return {"fields": fields}, f"{text[: found.start()]} {text[at:]}"


def _bound(text: str) -> int | float | str:
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


@dataclass
class CustomRead:
    rows: int | None = None
    output_format: str | None = None
    seed: int | None = None
    to_file: bool = False
    compliance: list[str] = field(default_factory=list)


@dataclass
class FireRead:
    mentions: dict[str, Quantity] = field(default_factory=dict)
    devices: int | None = None
    duration_s: int | None = None
    fault_share: float | None = None
    seed: int | None = None
    batch: int | None = None
    use_gpu: bool = False
    notes: list[str] = field(default_factory=list)


class Reader:
    """Reads tokens left to right; what no rule reads is kept and reported as unread spans."""

    def __init__(self, words: list[str]) -> None:
        self.words, self.at = words, 0
        self.unread: list[tuple[int, str]] = []
        self.gpu: bool | None = None  # as said: GPU, CPU, or neither
        self.duration_part: tuple[int, int] | None = None  # the last one's end and unit (s)

    def peek(self, ahead: int = 0) -> str:
        i = self.at + ahead
        return self.words[i] if i < len(self.words) else ""

    def number(self, ahead: int = 0) -> tuple[float, int] | None:
        """The number starting `ahead` tokens on, and how many tokens it takes."""
        first = self.peek(ahead)
        if first and first[0].isdigit():
            digits = first.replace(",", "")
            scale = 1000 if digits.endswith("k") else 1
            try:
                return float(digits.rstrip("k")) * scale, 1
            except ValueError:
                return None
        return _word_number(self.words[self.at + ahead :])

    def integer(self, what: str) -> int:
        """The whole number after a keyword (`seed 42`), the keyword consumed."""
        read = self.number(1)
        if read is None or not read[0].is_integer():
            raise PlanReadError(
                f"cannot read: {' '.join(self.words[self.at : self.at + 2])!r} "
                f"({what} takes a whole number)"
            )
        self.at += 1 + read[1]
        return int(read[0])

    def once(self, read: CustomRead | FireRead, name: str, value: Any, said: str) -> None:
        """Set `name` on `read`; a second value is refused, never picked over the first."""
        if getattr(read, name) is not None:
            raise PlanReadError(f"cannot read: {said!r}: {_SETTINGS[name]} is given twice")
        setattr(read, name, value)

    def miss(self) -> None:
        self.unread.append((self.at, self.words[self.at]))
        self.at += 1

    def fail_on_leftovers(self) -> None:
        if not self.unread:
            return
        spans: list[list[str]] = []
        last = -2
        for i, word in self.unread:
            if i == last + 1:
                spans[-1].append(word)
            else:
                spans.append([word])
            last = i
        raise PlanReadError("cannot read: " + ", ".join(repr(" ".join(s)) for s in spans))

    def skip_fillers(self) -> None:
        while self.at < len(self.words):
            if self.peek() in FILLERS or self.peek() in ".,;:!":
                self.at += 1
            else:
                self.miss()

    def compliance(self) -> list[str]:
        found = [COMPLIANCE[t] for t in self.words if t in COMPLIANCE]
        self.words = [t for t in self.words if t not in COMPLIANCE]
        return list(dict.fromkeys(found))

    def custom(self) -> CustomRead:
        read = CustomRead(compliance=self.compliance())
        while self.at < len(self.words):
            word = self.peek()
            number = self.number()
            if word == "seed":
                seed = self.integer("seed")
                self.once(read, "seed", seed, f"seed {seed}")
            elif number is not None and self.peek(number[1]) in ("rows", "records", "lines"):
                said = " ".join(self.words[self.at : self.at + number[1] + 1])
                self.once(read, "rows", int(number[0]), said)
                self.at += number[1] + 1
            elif word in FORMATS:
                self.once(read, "output_format", word, word)
                self.at += 1
            elif word in ("file", "save", "saved", "local", "disk"):
                read.to_file = True
                self.at += 1
            elif word in ("inline", "answer", "json-lines", "as", "into", "format") or (
                word in FILLERS or word in ".,;:!"
            ):
                self.at += 1
            else:
                self.miss()
        self.fail_on_leftovers()
        return read

    def fire(self) -> FireRead:
        read = FireRead()
        while self.at < len(self.words):
            self._fire_word(read)
        self.fail_on_leftovers()
        return read

    def _fire_word(self, read: FireRead) -> None:
        word, number = self.peek(), self.number()
        if word in ("seed", "batch"):
            value = self.integer(word)
            self.once(read, word, value, f"{word} {value}")
        elif word in GPU_WORDS or word == "cpu":
            self._gpu(read, word != "cpu", word)
            self.at += 1
        elif word in ("no", "without") and self.peek(1) in GPU_WORDS:
            self._gpu(read, False, f"{word} {self.peek(1)}")
            self.at += 2
        elif word in ("no", "without") and self.peek(1) in FAULT_WORDS:
            self.once(read, "fault_share", 0.0, f"{word} {self.peek(1)}")
            self.at += 2
        elif word in FORMATS:
            raise PlanReadError(
                f"cannot read: {word!r}: fire-sensor data lands in the lake (Iceberg); "
                "formats are for custom tables"
            )
        elif word in VAGUE_SHARES or (word == "a" and self.peek(1) == "few"):
            self.at += 2 if word == "a" else 1
            self._quantity(read, VAGUE_SHARES["few" if word == "a" else word], word)
        elif number is not None:
            start = self.at
            self.at += number[1]
            self._after_number(read, number[0], start)
        elif word in FAMILY_WORDS:
            read.mentions.setdefault(FAMILY_WORDS[word], None)
            self.at += 1
        elif word in SPEED_WORDS:
            read.notes.append(_speed_note(word))
            self.at += 1
        elif word in FILLERS or word in DEVICE_NOUNS or word in ".,;:!-":
            self.at += 1
        else:
            self.miss()

    def _gpu(self, read: FireRead, use_gpu: bool, word: str) -> None:
        if self.gpu is not None and self.gpu != use_gpu:
            raise PlanReadError(f"cannot read: {word!r}: GPU or CPU is given twice")
        self.gpu = read.use_gpu = use_gpu

    def _after_number(self, read: FireRead, value: float, start: int) -> None:
        word = self.peek()
        if word in SECONDS_PER:
            self.at += 1
            self._duration(read, round(value * SECONDS_PER[word]), SECONDS_PER[word], start)
        elif word in ("%", "percent") or (word == "per" and self.peek(1) == "cent"):
            self.at += 2 if word == "per" else 1
            if not 0 <= value <= 100:
                raise PlanReadError(f"cannot read: '{value:g} percent' (0 to 100)")
            self._quantity(read, value / 100, f"{value:g}%")
        elif not value.is_integer():
            raise PlanReadError(f"cannot read: '{value:g} {word}' (a count is a whole number)")
        else:
            self._quantity(read, int(value), f"{int(value)}")

    def _quantity(self, read: FireRead, quantity: int | float, said: str) -> None:
        """A count or share: of the family, the faults or the devices the next words name."""
        while self.peek() in SPEED_WORDS or self.peek() in ("of", "the", "more"):
            if self.peek() in SPEED_WORDS:
                read.notes.append(_speed_note(self.peek()))
            self.at += 1
        word = self.peek()
        if word in FAULT_WORDS and isinstance(quantity, float):
            self.once(read, "fault_share", quantity, f"{said} {word}")
        elif word in FAMILY_WORDS:
            family = FAMILY_WORDS[word]
            if read.mentions.get(family) is not None:
                raise PlanReadError(f"cannot read: two amounts for {family} ({said} {word})")
            read.mentions[family] = quantity
        elif word in DEVICE_NOUNS and isinstance(quantity, int):
            self.once(read, "devices", quantity, f"{said} {word}")
        elif said == "some":  # "some data": no amount at all
            return
        else:
            raise PlanReadError(f"cannot read: {f'{said} {word}'.strip()!r} (a count of what?)")
        self.at += 1

    def _duration(self, read: FireRead, seconds: int, unit: int, start: int) -> None:
        """A duration from `start` to here: a part of the one before when it follows it (side
        by side or after "and") in a smaller unit ("1 h 30 min"), else the duration."""
        said = " ".join(self.words[start : self.at])
        last = self.duration_part
        follows = last is not None and self.words[last[0] : start] in ([], ["and"])
        if read.duration_s is not None and last is not None and follows and unit < last[1]:
            read.duration_s += seconds
        else:
            self.once(read, "duration_s", seconds, said)
        self.duration_part = (self.at, unit)


def _speed_note(word: str) -> str:
    return (
        f"'{word}' is not selectable: each family draws its growth rates from the scenario catalog"
    )


def _word_number(words: list[str]) -> tuple[float, int] | None:
    """'two hundred and fifty' -> (250, 4); 'a hundred' -> (100, 2); None when no number."""
    total, current, used, seen = 0, 0, 0, False
    numbers = _UNITS | _TENS
    for i, word in enumerate(words):
        parts = word.split("-")
        following = words[i + 1] if i + 1 < len(words) else ""
        if all(p in numbers for p in parts):
            current += sum(numbers[p] for p in parts)
        elif word in _SCALES and (seen or (i == 1 and words[0] == "a")):
            current = max(current, 1) * _SCALES[word]
            if word == "thousand":
                total, current = total + current, 0
        elif (word == "a" and i == 0 and following in _SCALES) or (
            word == "and" and seen and following.split("-")[0] in numbers
        ):
            continue
        else:
            break
        seen, used = True, i + 1
    return (float(total + current), used) if seen else None
