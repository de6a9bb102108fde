"""The course-enrolment example of DCB: capacity per course, a limit per student.

One decision reads the events tagged with the course *or* the student and appends
with a condition on that same query, so two enrolments race only when they share
a course or a student. Shared by the race tests (threads and spawned processes).
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from typing import Any

from eskit import AppendCondition, AppendConditionFailed, EventStore, NewEvent, Query, QueryItem

CAPACITY = 10
STUDENT_LIMIT = 3
COURSES = [f"c{i}" for i in range(3)]
STUDENTS = [f"s{i}" for i in range(12)]  # 36 student places for 30 seats: both limits bite


def enrolment_query(course: str, student: str) -> Query:
    return Query([
        QueryItem(types=("Enrolled",), tags=(f"course:{course}",)),
        QueryItem(types=("Enrolled",), tags=(f"student:{student}",)),
    ])


def decide(events: Any, course: str, student: str) -> str | None:
    """Why the student may not enrol (``None``: they may)."""
    seats = places = 0
    for event in events:
        if f"course:{course}" in event.tags:
            seats += 1
            if f"student:{student}" in event.tags:
                return "already"
        if f"student:{student}" in event.tags:
            places += 1
    if seats >= CAPACITY:
        return "full"
    if places >= STUDENT_LIMIT:
        return "limit"
    return None


def enrol(store: EventStore, course: str, student: str, *, conditional: bool = True,
          attempts: int = 100) -> str:
    """Read, decide, append with the condition; read again after a lost race."""
    query = enrolment_query(course, student)
    for _ in range(attempts):
        read = store.read_events(query)
        refused = decide(read.events, course, student)
        if refused:
            return refused
        try:
            store.append(
                f"enrolment-{uuid.uuid4()}",
                [NewEvent("Enrolled", {"course": course, "student": student},
                          tags=(f"course:{course}", f"student:{student}"))],
                condition=AppendCondition(query, after=read.position) if conditional else None,
            )
            return "enrolled"
        except AppendConditionFailed:
            continue
    return "gave up"


def run_worker(store: EventStore, seed: int, tries: int) -> Counter[str]:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    for _ in range(tries):
        outcomes[enrol(store, rng.choice(COURSES), rng.choice(STUDENTS))] += 1
    return outcomes


def violations(store: EventStore) -> list[str]:
    """Every broken rule in the store's enrolments (empty: none)."""
    enrolled = [e for e in store.read_events(Query.of(types=["Enrolled"])).events]
    per_course = Counter(e.event_data["course"] for e in enrolled)
    per_student = Counter(e.event_data["student"] for e in enrolled)
    pairs = Counter((e.event_data["course"], e.event_data["student"]) for e in enrolled)
    problems = [f"course {c} has {n} > {CAPACITY}" for c, n in per_course.items() if n > CAPACITY]
    problems += [f"student {s} has {n} > {STUDENT_LIMIT}"
                 for s, n in per_student.items() if n > STUDENT_LIMIT]
    problems += [f"{p} enrolled {n} times" for p, n in pairs.items() if n > 1]
    return problems


def enrolled_count(store: EventStore) -> int:
    return len(store.read_events(Query.of(types=["Enrolled"])).events)
