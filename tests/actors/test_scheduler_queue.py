"""The scheduler's pure parts: the dispatch queue and the latency window (synchronous)."""

from __future__ import annotations

import pytest

from actors.scheduler.lanes import ClassState
from actors.scheduler.queue import DispatchQueue, check_slots
from actors.scheduler.stats import LatencySummary, LatencyWindow
from actors.scheduler.task import Executor, Task
from runtime.config import TaskClassConfig
from runtime.exceptions import Overloaded

URGENT = TaskClassConfig(priority=0, deadline_ms=500)
COMMAND = TaskClassConfig(priority=2, deadline_ms=2000)
BACKGROUND = TaskClassConfig(priority=9)


class Maker:
    """Tasks with increasing ids (their arrival order)."""

    def __init__(self) -> None:
        self.next_id = 0

    def __call__(
        self,
        task_class: str,
        *,
        at: float = 0.0,
        deadline_s: float | None = None,
        run_in: Executor = "loop",
    ) -> Task:
        self.next_id += 1
        return Task(self.next_id, task_class, run_in=run_in, submitted_at=at, deadline_s=deadline_s)


def make_queue(
    classes: dict[str, TaskClassConfig] | None = None, **slots: int
) -> tuple[DispatchQueue, Maker]:
    chosen = classes or {"urgent": URGENT, "command": COMMAND, "background": BACKGROUND}
    sizes: dict[Executor, int] = {"loop": 4, "thread": 2, "process": 2}
    sizes.update(slots)  # type: ignore[arg-type]  # the names are the executors
    return DispatchQueue(chosen, sizes), Maker()


def drain(queue: DispatchQueue, now: float = 0.0) -> list[int]:
    started = []
    while (task := queue.pop_ready(now)) is not None:
        started.append(task.id)
    return started


# -- ordering -------------------------------------------------------------------------------


def test_higher_priority_class_starts_first() -> None:
    """Among waiting tasks, the most urgent class (lowest priority number) starts first."""
    queue, task = make_queue(loop=1)
    for name in ("background", "command", "urgent"):
        queue.enqueue(task(name), 0.0)
    first = queue.pop_ready(0.0)
    assert first is not None and first.task_class == "urgent"
    assert queue.pop_ready(0.0) is None  # one loop slot
    queue.finish(first)
    second = queue.pop_ready(0.0)
    assert second is not None and second.task_class == "command"


def test_earliest_deadline_first_within_a_class() -> None:
    """Within a class, the earliest deadline starts first; no deadline goes last, FIFO."""
    queue, task = make_queue({"bg": TaskClassConfig(priority=9, max_concurrency=8)}, loop=8)
    deadlines = [None, 5.0, 2.0, None, 3.0]
    tasks = [task("bg", deadline_s=deadline) for deadline in deadlines]
    for queued in tasks:
        queue.enqueue(queued, 0.0)
    assert drain(queue) == [tasks[i].id for i in (2, 4, 1, 0, 3)]


def test_equal_priority_classes_interleave_by_deadline() -> None:
    """Two classes of the same priority are ordered by deadline, then by arrival."""
    same = TaskClassConfig(priority=3, deadline_ms=1000)
    queue, task = make_queue({"a": same, "b": same}, loop=8)
    late, early = task("a", deadline_s=4.0), task("b", deadline_s=1.0)
    queue.enqueue(late, 0.0)
    queue.enqueue(early, 0.0)
    assert drain(queue) == [early.id, late.id]


def test_aging_lets_waiting_background_work_overtake_urgent_work() -> None:
    """A background task gains a priority level per aging_ms, so it overtakes newer urgent work."""
    aging = TaskClassConfig(priority=9, aging_ms=100)
    queue, task = make_queue({"urgent": COMMAND, "background": aging}, loop=1)
    old = task("background", at=0.0)
    queue.enqueue(old, 0.0)
    queue.enqueue(task("urgent", at=0.5), 0.5)
    # 0.5 s of waiting is 5 levels: 9 - 5 = 4, still behind priority 2.
    first = queue.pop_ready(0.5)
    assert first is not None and first.task_class == "urgent"
    queue.finish(first)
    queue.enqueue(task("urgent", at=1.0), 1.0)
    # 1.0 s is 10 levels: 9 - 10 = -1, ahead of priority 2.
    assert queue.pop_ready(1.0) is old


def test_without_aging_background_waits_behind_urgent_work() -> None:
    """Without aging_ms, a background task never overtakes urgent work however long it waits."""
    queue, task = make_queue({"urgent": COMMAND, "background": BACKGROUND}, loop=1)
    queue.enqueue(task("background", at=0.0), 0.0)
    queue.enqueue(task("urgent", at=100.0), 100.0)
    first = queue.pop_ready(1000.0)
    assert first is not None and first.task_class == "urgent"


# -- slots and limits -----------------------------------------------------------------------


def test_class_max_concurrency_caps_running_tasks() -> None:
    """A class runs at most max_concurrency tasks; a finished one frees a place."""
    two = TaskClassConfig(priority=1, max_concurrency=2)
    queue, task = make_queue({"c": two}, loop=8)
    for _ in range(3):
        queue.enqueue(task("c"), 0.0)
    running = [queue.pop_ready(0.0), queue.pop_ready(0.0)]
    assert queue.pop_ready(0.0) is None and queue.running("c") == 2
    assert running[0] is not None
    queue.finish(running[0])
    assert queue.pop_ready(0.0) is not None


def test_executor_slots_are_shared_between_classes() -> None:
    """An executor runs at most its slots, whatever the classes."""
    queue, task = make_queue(thread=2)
    for name in ("urgent", "command", "background"):
        queue.enqueue(task(name, run_in="thread"), 0.0)
    assert len(drain(queue)) == 2
    assert queue.busy("thread") == 2 and queue.depth("background") == 1


def test_reserved_slots_stay_free_for_their_class() -> None:
    """Background work cannot take a slot reserved for an urgent class; the urgent class can."""
    voice = TaskClassConfig(priority=1, deadline_ms=1000, reserved=1, executor="thread")
    queue, task = make_queue({"voice": voice, "background": BACKGROUND}, thread=3)
    for _ in range(3):
        queue.enqueue(task("background", run_in="thread"), 0.0)
    assert len(drain(queue)) == 2  # the third slot is voice's
    queue.enqueue(task("voice", run_in="thread"), 0.0)
    started = queue.pop_ready(0.0)
    assert started is not None and started.task_class == "voice"


def test_a_used_reservation_holds_nothing_back() -> None:
    """Once its class uses its reserved slot, the other slots are open to everyone."""
    voice = TaskClassConfig(priority=1, deadline_ms=1000, reserved=1, executor="thread")
    queue, task = make_queue({"voice": voice, "background": BACKGROUND}, thread=3)
    queue.enqueue(task("voice", run_in="thread"), 0.0)
    for _ in range(3):
        queue.enqueue(task("background", run_in="thread"), 0.0)
    assert len(drain(queue)) == 3
    assert queue.running("voice") == 1 and queue.running("background") == 2


def test_a_reservation_holds_only_in_its_class_executor() -> None:
    """A class reserves slots in its own executor, not in the others."""
    voice = TaskClassConfig(priority=1, deadline_ms=1000, reserved=1, executor="thread")
    queue, task = make_queue({"voice": voice, "background": BACKGROUND}, loop=2)
    for _ in range(2):
        queue.enqueue(task("background"), 0.0)
    assert len(drain(queue)) == 2


def test_adaptive_limit_holds_a_class_below_its_maximum() -> None:
    """set_limit lowers a class's limit, clamped to 1..max_concurrency."""
    queue, task = make_queue({"background": BACKGROUND}, loop=8)
    queue.set_limit("background", 1)
    for _ in range(3):
        queue.enqueue(task("background"), 0.0)
    assert len(drain(queue)) == 1
    queue.set_limit("background", 0)
    assert queue.limit("background") == 1
    queue.set_limit("background", 99)
    assert queue.limit("background") == BACKGROUND.max_concurrency
    assert len(drain(queue)) == 2


# -- admission ------------------------------------------------------------------------------


def test_a_full_class_queue_refuses_new_tasks() -> None:
    """Past queue_capacity waiting tasks, enqueue raises Overloaded naming the class."""
    small = TaskClassConfig(priority=1, queue_capacity=2)
    queue, task = make_queue({"small": small})
    queue.enqueue(task("small"), 0.0)
    queue.enqueue(task("small"), 0.0)
    with pytest.raises(Overloaded, match=r"'small' has 2 tasks waiting \(queue_capacity\)"):
        queue.enqueue(task("small"), 0.0)
    assert queue.depth("small") == 2


def test_a_task_that_would_miss_its_deadline_is_refused_early() -> None:
    """A task that must wait, whose estimated finish is past its deadline, is refused."""
    one = TaskClassConfig(priority=1, deadline_ms=1000, max_concurrency=1)
    queue, task = make_queue({"c": one})
    queue.enqueue(task("c", deadline_s=1.0), 0.0, run_estimate_s=0.6)
    assert queue.pop_ready(0.0) is not None
    # One running ahead: ~0.6 + 0.6 = 1.2 s > 1.0 s.
    with pytest.raises(Overloaded, match=r"cannot meet deadline 1.000s: ~1.200s expected"):
        queue.enqueue(task("c", deadline_s=1.0), 0.0, run_estimate_s=0.6)
    queue.enqueue(task("c", deadline_s=1.5), 0.0, run_estimate_s=0.6)  # 1.2 s fits
    assert queue.depth("c") == 1


def test_a_task_that_can_start_at_once_is_never_refused_on_its_estimate() -> None:
    """With a free slot, a slow class's task is let in (refusing it would shut the class out)."""
    queue, task = make_queue({"c": COMMAND})
    queue.enqueue(task("c", deadline_s=1.0), 0.0, run_estimate_s=5.0)
    assert queue.depth("c") == 1


def test_an_unknown_class_is_a_key_error() -> None:
    """The queue only knows configured classes (the service checks names first)."""
    queue, task = make_queue()
    with pytest.raises(KeyError):
        queue.enqueue(task("nope"), 0.0)


# -- deadlines ------------------------------------------------------------------------------


def test_expire_takes_out_queued_tasks_past_their_deadline() -> None:
    """Tasks at or past their deadline in on_late: fail classes leave the queue, in order."""
    late_runs = TaskClassConfig(priority=2, deadline_ms=1000, on_late="run")
    queue, task = make_queue({"fail": COMMAND, "run": late_runs}, loop=1)
    blocker = task("fail", deadline_s=10.0)
    queue.enqueue(blocker, 0.0)
    assert queue.pop_ready(0.0) is blocker
    soon, later, kept = task("fail", deadline_s=1.0), task("fail", deadline_s=2.0), task("run")
    for queued in (later, soon, kept):
        queue.enqueue(queued, 0.0)
    assert queue.next_expiry() == 1.0
    assert queue.expire(0.5) == []
    assert queue.expire(1.0) == [soon]
    assert soon.state == "new" and queue.next_expiry() == 2.0
    assert queue.expire(99.0) == [later]
    assert queue.next_expiry() is None and queue.depth("run") == 1


def test_removed_tasks_never_start() -> None:
    """remove() takes a queued task out; removing it again, or a running one, is False."""
    queue, task = make_queue({"bg": BACKGROUND}, loop=8)
    tasks = [task("bg") for _ in range(3)]
    for queued in tasks:
        queue.enqueue(queued, 0.0)
    assert queue.remove(tasks[1]) and not queue.remove(tasks[1])
    assert queue.depth("bg") == 2
    assert drain(queue) == [tasks[0].id, tasks[2].id]
    assert not queue.remove(tasks[0])


def test_many_removals_compact_the_heap_and_keep_the_order() -> None:
    """Removing most tasks of a lane rebuilds its heap; the rest still come out in order."""
    state = ClassState("bg", BACKGROUND)
    lane, task = state.lanes["loop"], Maker()
    tasks = [task("bg", deadline_s=float(100 - i)) for i in range(100)]
    for queued in tasks:
        queued.state = "queued"
        lane.push(queued)
    for queued in tasks[:90]:
        queued.state = "new"
        lane.discard(queued)
    assert len(lane.heap) < 100 and state.queued == lane.live == 10
    order = []
    while lane.live:
        lane.head()
        order.append(lane.pop().id)
    assert order == [t.id for t in reversed(tasks[90:])] and state.queued == 0


def test_drain_takes_out_every_queued_task() -> None:
    """drain() empties every lane (the scheduler is stopping)."""
    queue, task = make_queue(loop=1)
    for name in ("urgent", "command", "background"):
        queue.enqueue(task(name), 0.0)
    assert queue.pop_ready(0.0) is not None
    assert len(queue.drain()) == 2
    assert len(queue) == 0 and queue.pop_ready(0.0) is None


# -- shedding -------------------------------------------------------------------------------


def test_overload_sheds_queued_background_work_lowest_class_first() -> None:
    """While overloaded, queued tasks of classes without a deadline are shed, lowest first."""
    low = TaskClassConfig(priority=7, max_concurrency=1)
    lower = TaskClassConfig(priority=8, max_concurrency=1)
    queue, task = make_queue({"urgent": URGENT, "low": low, "lower": lower}, loop=8)
    for name in ("low", "lower", "low", "lower", "urgent"):
        queue.enqueue(task(name), 0.0)
    assert len(drain(queue)) == 3  # one of each class runs; one low and one lower wait
    assert queue.shed(0.0) == []
    queue.overloaded = True
    shed = queue.shed(0.0)
    assert [t.task_class for t in shed] == ["lower", "low"]
    assert all(t.state == "new" for t in shed) and len(queue) == 0
    with pytest.raises(Overloaded, match="'low' is being shed: the runtime is overloaded"):
        queue.enqueue(task("low"), 0.0)
    queue.enqueue(task("urgent"), 0.0)  # urgent work is still let in
    queue.overloaded = False
    queue.enqueue(task("low"), 0.0)


def test_urgent_work_waiting_for_a_slot_sheds_background_work_in_that_executor() -> None:
    """Urgent work blocked on an executor's slots sheds background work queued there only."""
    queue, task = make_queue(thread=1)
    queue.enqueue(task("background", run_in="thread"), 0.0)
    assert queue.pop_ready(0.0) is not None  # background holds the only thread slot
    in_thread, on_loop = task("background", run_in="thread"), task("background")
    queue.enqueue(in_thread, 0.0)
    queue.enqueue(task("urgent", run_in="thread"), 0.0)
    queue.set_limit("background", 1)
    queue.enqueue(on_loop, 0.0)  # waits for the class limit, on the loop
    assert queue.shed(0.0) == [in_thread]
    assert queue.pressured == {"thread"}
    with pytest.raises(Overloaded, match="urgent work is waiting"):
        queue.enqueue(task("background", run_in="thread"), 0.0)
    queue.enqueue(task("background"), 0.0)  # the loop is not under pressure


def test_background_work_aged_ahead_of_waiting_urgent_work_is_kept() -> None:
    """Under slot pressure, a background task that aged past the urgent work is not shed."""
    aging = TaskClassConfig(priority=9, aging_ms=100)
    queue, task = make_queue({"command": COMMAND, "background": aging}, loop=1)
    queue.enqueue(task("command", deadline_s=60.0), 0.0)
    assert queue.pop_ready(0.0) is not None  # holds the only slot
    old, young = task("background", at=0.0), task("background", at=1.0)
    queue.enqueue(old, 0.0)
    queue.enqueue(young, 1.0)
    queue.enqueue(task("command", at=1.0), 1.0)
    # At 1.0 s: old is 9 - 10 = -1, ahead of command's 2; young is still 9.
    assert queue.shed(1.0) == [young]
    assert queue.depth("background") == 1 and old.state == "queued"
    with pytest.raises(Overloaded, match="urgent work is waiting"):
        queue.enqueue(task("background", at=1.0), 1.0)


def test_urgent_work_held_by_its_own_limit_sheds_nothing() -> None:
    """Urgent work waiting for its class limit (not a slot) is no reason to shed."""
    one = TaskClassConfig(priority=0, deadline_ms=500, max_concurrency=1)
    queue, task = make_queue({"urgent": one, "background": BACKGROUND}, loop=8)
    queue.enqueue(task("urgent"), 0.0)
    queue.enqueue(task("urgent"), 0.0)
    queue.set_limit("background", 1)
    queue.enqueue(task("background"), 0.0)
    queue.enqueue(task("background"), 0.0)
    assert len(drain(queue)) == 2
    assert queue.shed(0.0) == [] and queue.pressured == frozenset()


def test_held_executors_start_no_background_work() -> None:
    """In a held executor background classes start nothing; urgent classes still start."""
    queue, task = make_queue()
    background, urgent = task("background", run_in="process"), task("urgent", run_in="process")
    queue.enqueue(background, 0.0)
    queue.enqueue(urgent, 0.0)
    queue.enqueue(task("background"), 0.0)
    queue.held = frozenset({"process"})
    started = [queue.pop_ready(0.0), queue.pop_ready(0.0), queue.pop_ready(0.0)]
    assert started[0] is urgent and started[1] is not None and started[1].run_in == "loop"
    assert started[2] is None
    queue.held = frozenset()
    assert queue.pop_ready(0.0) is background


def test_urgent_active_while_urgent_work_waits_or_runs() -> None:
    """urgent_active says whether work of a class with a deadline is queued or running."""
    queue, task = make_queue()
    queue.enqueue(task("background"), 0.0)
    assert not queue.urgent_active
    urgent = task("urgent")
    queue.enqueue(urgent, 0.0)
    assert queue.urgent_active
    drain(queue)
    assert queue.urgent_active
    queue.finish(urgent)
    assert not queue.urgent_active


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("classes", "slots", "message"),
    [
        ({"v": TaskClassConfig(priority=1, reserved=3, max_concurrency=4)}, {"loop": 2},
         "classes reserve 3 'loop' slots but there are 2"),
        ({"v": TaskClassConfig(priority=1, executor="process")}, {"loop": 2, "process": 0},
         r"executor 'process' has no slots but class\(es\) v use it"),
    ],
)  # fmt: skip
def test_reservations_that_do_not_fit_are_refused(
    classes: dict[str, TaskClassConfig], slots: dict[Executor, int], message: str
) -> None:
    """A queue whose reserved slots do not fit in their executor cannot be built."""
    with pytest.raises(ValueError, match=message):
        check_slots(classes, slots)
    with pytest.raises(ValueError, match=message):
        DispatchQueue(classes, slots)


def test_configure_applies_live_and_keeps_waiting_tasks() -> None:
    """configure() changes priorities and slots live; queued tasks stay and follow them."""
    queue, task = make_queue({"a": COMMAND, "b": BACKGROUND}, loop=1)
    first_b = task("b")
    queue.enqueue(first_b, 0.0)
    queue.enqueue(task("a"), 0.0)
    queue.configure(
        {"a": COMMAND, "b": TaskClassConfig(priority=0), "c": URGENT},
        {"loop": 2, "thread": 1, "process": 1},
    )
    assert queue.pop_ready(0.0) is first_b
    assert queue.pop_ready(0.0) is not None and queue.slots("loop") == 2
    queue.enqueue(task("c"), 0.0)  # an added class


def test_configure_refuses_removing_a_class_or_bad_reservations() -> None:
    """configure() raises ValueError (and changes nothing) for a removed class or bad slots."""
    queue, _ = make_queue({"a": COMMAND, "b": BACKGROUND}, loop=1)
    with pytest.raises(ValueError, match="cannot be removed while running: b"):
        queue.configure({"a": COMMAND}, {"loop": 1})
    greedy = TaskClassConfig(priority=1, reserved=2)
    with pytest.raises(ValueError, match="reserve 2 'loop' slots"):
        queue.configure({"a": greedy, "b": BACKGROUND}, {"loop": 1})
    assert queue.classes["a"] == COMMAND and queue.slots("loop") == 1


def test_a_new_max_concurrency_resets_the_limit() -> None:
    """Changing max_concurrency sets the class limit to it (an adaptive limit is set again)."""
    queue, _ = make_queue({"b": BACKGROUND})
    queue.set_limit("b", 1)
    queue.configure({"b": TaskClassConfig(priority=9, max_concurrency=6)}, {"loop": 8})
    assert queue.limit("b") == 6


# -- the latency window ---------------------------------------------------------------------


def test_latency_window_percentiles_are_nearest_rank() -> None:
    """p50/p95/p99 are nearest-rank over the samples; max and count are kept."""
    window = LatencyWindow(size=1000)
    for ms in range(1, 101):
        window.add(ms / 1000)
    summary = window.summary()
    assert (summary.count, summary.p50_s, summary.p95_s, summary.p99_s, summary.max_s) == (
        100, 0.05, 0.095, 0.099, 0.1,
    )  # fmt: skip
    assert window.percentile(100) == 0.1


def test_latency_window_keeps_only_recent_samples_but_all_time_max() -> None:
    """Old samples leave the ring; count and max are all-time."""
    window = LatencyWindow(size=3)
    for seconds in (9.0, 1.0, 1.0, 1.0):
        window.add(seconds)
    assert window.percentile(99) == 1.0
    assert window.summary().max_s == 9.0 and window.count == 4


def test_latency_window_estimate_needs_samples_and_follows_recent_ones() -> None:
    """estimate() is None before min_samples, then an EWMA that moves toward new samples."""
    window = LatencyWindow(smoothing=0.5)
    window.add(1.0)
    window.add(1.0)
    assert window.estimate() is None
    window.add(3.0)
    assert window.estimate() == 2.0
    assert window.estimate(min_samples=4) is None


def test_an_empty_window_summarises_to_zeros_and_clamps_negatives() -> None:
    """No samples: all zeros; a negative sample (clock quirk) counts as 0."""
    window = LatencyWindow()
    assert window.summary() == LatencySummary() and window.percentile(50) == 0.0
    window.add(-1.0)
    assert window.summary().max_s == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"size": 0}, "size must be >= 1"), ({"smoothing": 0.0}, "smoothing must be in")],
)
def test_latency_window_rejects_bad_settings(kwargs: dict[str, float], message: str) -> None:
    """A window needs a size >= 1 and a smoothing in (0, 1]."""
    with pytest.raises(ValueError, match=message):
        LatencyWindow(**kwargs)  # type: ignore[arg-type]


def test_latency_window_rejects_a_bad_percentile() -> None:
    """percentile() needs q in (0, 100]."""
    with pytest.raises(ValueError, match="q must be in"):
        LatencyWindow().percentile(0)
