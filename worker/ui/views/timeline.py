"""The timeline: the next twelve months of expiries as an SVG chart drawn on the server. A mark
per token at its expiry, coloured by its state, stacked by week; above AGGREGATE_ABOVE tokens, a
bar per week stacked by state instead (5,000 marks would be a smudge). The warning thresholds
are bands reaching back from each expiry's point of view: a token inside the 30-day band is
warned at 30 days. Pure: rows and `now` in, shapes and their coordinates out (the template
writes the SVG)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar

from worker.rules.status import STATES, Row
from worker.timefmt import format_rfc3339

#: Above this many tokens in the year, the chart shows weeks instead of tokens.
AGGREGATE_ABOVE = 300

#: The window, and the chart's size and margins, in SVG user units.
DAYS = 365
WIDTH, HEIGHT = 1000, 320
LEFT, RIGHT, TOP, BOTTOM = 40, 20, 34, 36
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
AXIS_Y = TOP + PLOT_H

#: A mark's radius, and the most vertical room one takes when a week is crowded.
MARK_R, MARK_STEP = 5, 12

#: Closest two threshold labels may be (horizontally), or the nearer one is left out.
LABEL_GAP = 30

#: Least height of a state's part of a week's bar: one token replaced among 300 stays visible.
MIN_SEGMENT = 3


@dataclass(frozen=True)
class Band:
    x: float
    width: float
    days: int
    label_x: float | None  # None: no label (too close to another)


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Mark:
    cx: float
    cy: float
    state: str
    server_id: str
    title: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    state: str
    count: int
    title: str


@dataclass
class Timeline:
    now: datetime
    bands: list[Band]
    ticks: list[Tick]
    marks: list[Mark] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    #: The most tokens in one week, and the height of that many (the bars' scale); 0 in the
    #: per-token chart.
    week_max: int = 0
    week_max_y: float = 0.0
    #: Tokens on the chart; expired already; expiring after the window; servers with none.
    shown: int = 0
    expired: int = 0
    beyond: int = 0
    no_token: int = 0
    states: Counter[str] = field(default_factory=Counter)

    width: ClassVar[int] = WIDTH
    height: ClassVar[int] = HEIGHT
    left: ClassVar[int] = LEFT
    top: ClassVar[int] = TOP
    plot_w: ClassVar[int] = PLOT_W
    plot_h: ClassVar[int] = PLOT_H
    axis_y: ClassVar[int] = AXIS_Y
    mark_r: ClassVar[int] = MARK_R

    @property
    def aggregated(self) -> bool:
        return self.week_max > 0

    @property
    def legend(self) -> list[tuple[str, int]]:
        """The states on the chart and their tokens, most urgent first."""
        return [(state, self.states[state]) for state in STATES if self.states[state]]


def x_of(moment: datetime, now: datetime) -> float:
    """The horizontal position of `moment` (now at the left edge, a year ahead at the right)."""
    share = (moment - now) / timedelta(days=DAYS)
    return round(LEFT + min(max(share, 0.0), 1.0) * PLOT_W, 1)


def timeline(rows: Sequence[Row], now: datetime, thresholds: Sequence[int]) -> Timeline:
    """The chart of `rows` (every server's status row) at `now`."""
    end = now + timedelta(days=DAYS)
    chart = Timeline(now, bands(now, thresholds), ticks(now))
    within: list[Row] = []
    for row in rows:
        if row.token is None:
            chart.no_token += 1
        elif row.token.expires_at <= now:
            chart.expired += 1
        elif row.token.expires_at > end:
            chart.beyond += 1
        else:
            within.append(row)
    chart.shown = len(within)
    chart.states = Counter(r.state for r in within)
    if len(within) > AGGREGATE_ABOVE:
        chart.bars, chart.week_max = week_bars(within, now)
        chart.week_max_y = round(AXIS_Y - chart.week_max * _scale(chart.week_max), 1)
    else:
        chart.marks = marks(within, now)
    return chart


def bands(now: datetime, thresholds: Sequence[int]) -> list[Band]:
    """One band per threshold within the window, the widest first (drawn first, under the
    narrower ones); labels left out where they would crowd the one before."""
    found, last_label = [], None
    for days in sorted({t for t in thresholds if 0 < t <= DAYS}, reverse=True):
        right = x_of(now + timedelta(days=days), now)
        label = right if last_label is None or last_label - right >= LABEL_GAP else None
        last_label = label if label is not None else last_label
        found.append(Band(LEFT, round(right - LEFT, 1), days, label))
    return found


def ticks(now: datetime) -> list[Tick]:
    """The first day of each month in the window, named (with the year in January and on the
    first tick)."""
    found = []
    month = datetime(now.year, now.month, 1, tzinfo=now.tzinfo)
    while True:
        month = (month + timedelta(days=32)).replace(day=1)
        if month > now + timedelta(days=DAYS):
            return found
        label = month.strftime("%b %Y" if not found or month.month == 1 else "%b")
        found.append(Tick(x_of(month, now), label))


def _expiry(row: Row) -> datetime:
    assert row.token is not None  # the chart holds only rows with a token
    return row.token.expires_at


def _week(row: Row, now: datetime) -> int:
    return min((_expiry(row) - now).days // 7, DAYS // 7)


def marks(rows: Sequence[Row], now: datetime) -> list[Mark]:
    """A mark per token at its expiry, stacked upwards within its week."""
    by_week: dict[int, list[Row]] = defaultdict(list)
    for row in rows:
        by_week[_week(row, now)].append(row)
    crowd = max((len(r) for r in by_week.values()), default=1)
    step = min(MARK_STEP, (PLOT_H - 2 * MARK_R) / crowd)
    found = []
    for week in sorted(by_week):
        ordered = sorted(by_week[week], key=lambda r: (_expiry(r), r.server.name))
        for height, row in enumerate(ordered):
            found.append(
                Mark(
                    cx=x_of(_expiry(row), now),
                    cy=round(AXIS_Y - MARK_R - 1 - height * step, 1),
                    state=row.state,
                    server_id=row.server.id,
                    title=_mark_title(row),
                )
            )
    return found


def _mark_title(row: Row) -> str:
    org = f" ({row.server.org})" if row.server.org else ""
    return f"{row.server.name}{org}: expires {format_rfc3339(_expiry(row))}, {row.state}"


def _scale(week_max: int) -> float:
    """Units per token in the bars (room left for the least heights of every state)."""
    return (PLOT_H - 4 - MIN_SEGMENT * len(STATES)) / week_max


def week_bars(rows: Sequence[Row], now: datetime) -> tuple[list[Bar], int]:
    """A bar per week, stacked by state (the most urgent at the bottom), and the most tokens
    in one week (the scale)."""
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    for row in rows:
        counts[_week(row, now)][row.state] += 1
    week_max = max(sum(c.values()) for c in counts.values())
    scale = _scale(week_max)
    found = []
    for week in sorted(counts):
        start = now + timedelta(days=7 * week)
        left, right = x_of(start, now), x_of(start + timedelta(days=7), now)
        base = float(AXIS_Y)
        for state in STATES:
            count = counts[week][state]
            if not count:
                continue
            height = max(count * scale, MIN_SEGMENT)
            base -= height
            title = f"week of {start:%Y-%m-%d}: {count} {state}"
            found.append(
                Bar(left + 0.5, round(base, 1), max(right - left - 1, 1), round(height, 1),
                    state, count, title)
            )  # fmt: skip
    return found, week_max
