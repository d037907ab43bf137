"""tinyworld tasks, parser and judges: determinism, splits, references, partial credit, round trips, robustness."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langplay.evaluation.tinyworld import MAX_NEW_TOKENS
from langplay.tinyworld import judges
from langplay.tinyworld.tasks import (
    ANSWER_MARKER, CHALLENGER_PROMPT, FAMILIES, SPLITS, challenger_example, check, draw_task, hasty_response,
    make_task, number_words, parse, reference_samples, sample_tasks, shows_work, split_of, stated_answer,
)

ALL = [(name, level) for name, fam in FAMILIES.items() for level in range(1, fam.levels + 1)]
SEEDS = range(60)


def kinds(kind):
    return [name for name, fam in FAMILIES.items() if fam.kind == kind]


# ---------------------------------------------------------------------------------------------- the families
def test_families_cover_the_three_kinds():
    assert len(FAMILIES) >= 8
    for kind in ("exact", "open", "reasoning"):
        assert len(kinds(kind)) >= 2, kind
    reasoning = [FAMILIES[n] for n in kinds("reasoning")]
    assert any(not f.verifiable for f in reasoning) and any(f.verifiable for f in reasoning)
    assert any(f.long_answer for f in reasoning) and any(not f.long_answer for f in reasoning)
    assert all(3 <= f.levels <= 4 for f in FAMILIES.values())
    assert all(len(f.phrasings) >= 3 for f in FAMILIES.values())


@pytest.mark.parametrize("name,level", ALL)
def test_tasks_are_deterministic_in_their_seed(name, level):
    assert make_task(name, level, 7) == make_task(name, level, 7)
    prompts = {make_task(name, level, s).prompt for s in range(30)}
    assert len(prompts) > 5  # seeds give different instances


@pytest.mark.parametrize("name,level", ALL)
def test_references_score_one_and_stay_short(name, level):
    fam = FAMILIES[name]
    for seed in SEEDS:
        task = make_task(name, level, seed)
        assert check(task, task.reference) == 1.0, task
        assert check(task, f" {task.reference} \n") == 1.0  # surrounding spaces don't matter
        assert len(task.prompt) <= 64, task.prompt
        if fam.kind == "reasoning":
            assert len(task.reference) < MAX_NEW_TOKENS, task.reference  # a character a token, then EOS
            assert task.reference.endswith(f"{ANSWER_MARKER} {task.answer}.")
            assert stated_answer(task.reference) == task.answer
        else:
            assert len(task.reference) <= 40 and task.reference == task.answer


def test_easy_levels_are_small_and_hard_levels_bigger():
    assert all(max(dict(make_task("add", 1, s).params).values()) <= 9 for s in SEEDS)
    assert all(min(dict(make_task("add", 4, s).params).values()) >= 1000 for s in SEEDS)
    assert all(len(dict(make_task("reverse", 4, s).params)["s"]) == 9 for s in SEEDS)
    assert all(int(make_task("add", 1, s).answer) <= 18 for s in SEEDS)


def test_bad_family_or_level_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown tinyworld family 'nope'"):
        make_task("nope", 1, 0)
    with pytest.raises(ValueError, match="level 9 is out of range"):
        make_task("add", 9, 0)
    with pytest.raises(ValueError, match="unknown split"):
        sample_tasks("eval", 3, 0)


# ---------------------------------------------------------------------------------------------- splits by instance
def test_an_instance_has_one_split_whatever_drew_it():
    assert abs(sum(SPLITS.values()) - 1) < 1e-9
    for name, level in ALL:
        for seed in range(40):
            task = make_task(name, level, seed)
            split = split_of(task.family, task.params)
            assert split in SPLITS
            parsed = parse(task.prompt)  # the same instance, parsed from its text: the same split
            assert split_of(parsed.family, parsed.params) == split, task


@pytest.mark.parametrize("name,level", ALL)
def test_every_level_has_instances_in_every_split(name, level):
    rng = random.Random(0)
    for split in SPLITS:
        assert split_of(name, draw_task(rng, name, level, split).params) == split


def test_held_out_never_overlaps_training():
    """No test or tune instance, by parameters or by prompt text, is reachable from anything that trains: the
    training split's draws (every family and level), the base model's recipe and the challenger examples."""
    from langplay.evaluation.tinyworld import held_out_tasks
    from langplay.tinyworld.base import training_rows

    train = [t for name, level in ALL for t in sample_tasks("train", 400, level, families=[name], levels=[level])]
    train_params = {(t.family, t.params) for t in train}
    train_prompts = {t.prompt for t in train}
    train_prompts |= {row["prompt"] for row in training_rows(4000, seed=0)} | {row["completion"] for row in
                                                                                training_rows(4000, seed=0)}
    train_prompts |= {challenger_example(s) for s in range(2000)}
    for split in ("test", "tune"):
        held = held_out_tasks(per_level=60, seed=123, split=split) + sample_tasks(split, 2000, seed=5)
        assert {split_of(t.family, t.params) for t in held} == {split}
        assert not {(t.family, t.params) for t in held} & train_params
        assert not {t.prompt for t in held} & train_prompts
        # and the comparison can fail: the easy levels' few instances are all reached from both sides
        assert len({(t.family, t.params) for t in held if (t.family, t.level) == ("sum_to", 1)}) >= 3
    assert all(split_of(t.family, t.params) == "train" for t in train)
    base_tasks = [parse(row["prompt"]) for row in training_rows(2000, seed=0)]
    assert all(split_of(t.family, t.params) == "train" for t in base_tasks if t is not None)
    assert sum(t is not None for t in base_tasks) > 1500


def test_sample_tasks_respects_the_split_and_the_filters():
    train = sample_tasks("train", 200, seed=1)
    tests = sample_tasks("test", 200, seed=1)
    assert all(split_of(t.family, t.params) == "train" for t in train)
    assert all(split_of(t.family, t.params) == "test" for t in tests)
    assert sample_tasks("test", 50, seed=3) == sample_tasks("test", 50, seed=3)
    assert sample_tasks("test", 50, seed=3) != sample_tasks("test", 50, seed=4)
    assert {t.family for t in train} == set(FAMILIES)
    some = sample_tasks("train", 100, seed=2, families=["add", "spell"], levels=[1, 2])
    assert {t.family for t in some} == {"add", "spell"} and {t.level for t in some} == {1, 2}


# ---------------------------------------------------------------------------------------------- partial credit
def test_exact_answers_get_partial_credit():
    add = parse("What is 1234 + 4321?")  # 5555
    say = "The answer is {}.".format
    assert check(add, say(5555)) == 1.0 and check(add, "5555") == 0.5  # a reasoning family: after the marker
    assert 0 < check(add, say(5545)) < 1 and check(add, say(5545)) > check(add, say(1111))
    assert 0 < check(add, say("the sum, 5555")) < check(add, say(5555))  # the number inside prose
    assert check(add, "") == 0.0 and check(add, "hello") == 0.0
    rev = parse("Reverse abcdefg.")
    assert check(rev, "gfedcba") == 1.0 and 0 < check(rev, "gfedcbx") < 1 and check(rev, "abcdefg") < 0.5
    count = parse("How many a's are in abacada?")  # 4
    assert check(count, "4") == 1.0 and check(count, "5") == 0.5 and check(count, "9") == 0.0
    mx = parse("What is the largest of 3, 8, 5?")
    assert check(mx, "8") == 1.0 and check(mx, "5") == 0.5 and check(mx, "2") < 0.5


def test_open_answers_are_scored_by_constraints():
    even = parse("Give an even number between 11 and 49.")
    assert check(even, "12") == check(even, "48") == 1.0
    assert check(even, "13") == pytest.approx(2 / 3) and check(even, "60") == pytest.approx(2 / 3)
    assert check(even, "61") == pytest.approx(1 / 3) and check(even, "twelve") == 0.0
    sums = parse("Write three numbers that sum to 20.")
    assert check(sums, "5, 5, 10") == check(sums, "1 + 2 + 17") == check(sums, "0 0 20") == 1.0
    assert check(sums, "5, 15") == 0.75 and check(sums, "5, 5, 11") == 0.5 and check(sums, "x") == 0.0
    letters = parse("Write 5 letters using only a, b and c.")
    assert check(letters, "abcab") == check(letters, "ccccc") == 1.0
    assert 0.5 < check(letters, "abcaz") < 1 and 0 < check(letters, "abc") < check(letters, "abcaa")


def test_reasoning_answers_are_read_after_the_marker():
    story = parse("Ann has 3 pens, gets 4, loses 2. How many now?")
    assert story.reference == "3+4=7. 7-2=5. The answer is 5." and story.answer == "5"
    assert check(story, "3+4=7. 7-2=5. The answer is 5.") == 1.0
    assert check(story, "I think the answer is 5") == 1.0  # case of the marker, no final period
    assert check(story, "3+4=7. 7-2=5. The answer is 6.") < 1
    assert check(story, "5") == 0.5  # right, but without the marker
    spell = parse("Spell 3456 in words.")
    assert spell.answer == "three thousand four hundred fifty-six"
    assert check(spell, "The answer is Three thousand, four hundred and fifty six.") == 1.0  # tolerant spelling
    assert 0.5 < check(spell, "The answer is three thousand four hundred fifty-seven.") < 1
    assert check(spell, "The answer is 3456.") == 0.0
    mul = parse("What is 47 * 36?")
    assert mul.reference == "47*30=1410. 47*6=282. 1410+282=1692. The answer is 1692."
    add = parse("Add 86 and 66.")  # column addition, each step writing the digits found so far
    assert add.reference == "6+6=12, 2. 8+6+1=15, 152. The answer is 152." and add.answer == "152"
    assert parse("What is 9 + 5?").reference == "9+5=14, 14. The answer is 14."
    assert parse("Add 4352 and 8172.").reference == (
        "2+2=4, 4. 5+7=12, 24. 3+1+1=5, 524. 4+8=12, 12524. The answer is 12524.")


def test_spell_looks_up_the_words_below_twenty_in_the_same_step_at_every_level():
    """An easy test instance ("Spell 15") is a step of harder training ones ("315 = 300 + 15. 15 is fifteen.")."""
    assert parse("Spell 15 in words.").reference == "15 is fifteen. The answer is fifteen."
    assert parse("Spell 315 in words.").reference == "315 = 300 + 15. 15 is fifteen. The answer is three hundred fifteen."
    assert parse("Spell 301 in words.").reference == "301 = 300 + 1. 1 is one. The answer is three hundred one."
    # below one hundred each part is looked up, the ones first: a single digit's step starts two-digit answers too
    assert parse("Spell 21 in words.").reference == "1 is one. 20 is twenty. The answer is twenty-one."
    assert parse("Spell 40 in words.").reference == "40 is forty. The answer is forty."
    assert parse("Spell 245 in words.").reference == "245 = 200 + 40 + 5. The answer is two hundred forty-five."
    longest = max(len(parse(f"Spell {n} in words.").reference) for n in range(1, 10_000))
    assert longest < MAX_NEW_TOKENS  # "8817 = 8000 + 800 + 17. 17 is seventeen. The answer is eight thousand..."
    for n in (1, 3, 15, 17):  # level 1 instances outside training: each one's step is inside training rows
        step = f"{n} is {number_words(n)}."
        assert any(step in task.reference and split_of("spell", task.params) == "train"
                   for task in (make_task("spell", level, seed) for level in (3, 4) for seed in range(2000))), step
    level_2 = [make_task("spell", 2, seed) for seed in range(400)]
    level_2 = [t.reference for t in level_2 if split_of("spell", t.params) == "train"]
    for n in (1, 3):  # and the single digits in a tenth of level 2's
        assert sum(ref.startswith(f"{n} is {number_words(n)}.") for ref in level_2) > 0.05 * len(level_2), n


def test_sum_to_s_reference_splits_n_by_place_value():
    """One canonical answer an easy model can learn by copying digits (a random split of n needs the sum)."""
    assert parse("Write two numbers that sum to 76.").reference == "70, 6"
    assert parse("Write two numbers that sum to 7.").reference == "7, 0"
    assert parse("Give 3 numbers adding up to 45.").reference == "40, 5, 0"
    assert parse("Write 2 numbers that sum to 345.").reference == "340, 5"  # more parts than k: the leading merge
    assert parse("Name four whole numbers with sum 909.").reference == "900, 9, 0, 0"
    for seed in range(300):
        task = make_task("sum_to", 1 + seed % 4, seed)
        assert check(task, task.reference) == 1.0 and len(task.reference.split(", ")) == dict(task.params)["k"]


def test_the_hasty_author_answers_a_reasoning_task_at_once_with_its_first_number():
    task = parse("Sam has 51 cups, buys 38, loses 82. How many now?")
    assert hasty_response(task) == "The answer is 51." and not shows_work(hasty_response(task))
    assert check(task, hasty_response(task)) < 0.5 < check(task, task.reference) == 1.0
    assert hasty_response(parse("Spell 315 in words.")) == "The answer is 315."
    assert check(parse("Spell 315 in words."), "The answer is 315.") == 0.0


def test_shows_work_tells_worked_steps_from_a_direct_answer():
    assert shows_work("7+5=12, 2. 3+5+1=9, 92. The answer is 92.")
    assert not shows_work("The answer is 92.") and not shows_work("  the answer is 92.")
    assert not shows_work("92") and not shows_work("")  # no marker: nothing is worked towards it
    assert shows_work("The answer is 9. No: 9+3=12. The answer is 12.")  # steps before the last marker


def test_stated_answer():
    assert stated_answer("2+2=4. The answer is 4.") == "4"
    assert stated_answer("the answer is: forty-seven.\nbye") == "forty-seven"
    assert stated_answer("The answer is 3. No wait, the answer is 5.") == "5"
    assert stated_answer("no marker here") is None


def test_number_words():
    assert [number_words(n) for n in (0, 7, 13, 40, 47, 100, 305, 1000, 9999)] == [
        "zero", "seven", "thirteen", "forty", "forty-seven", "one hundred", "three hundred five", "one thousand",
        "nine thousand nine hundred ninety-nine"]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_wrong_answers_score_below_one(name):
    for level in range(1, FAMILIES[name].levels + 1):
        for seed in range(20):
            task = make_task(name, level, seed)
            assert check(task, "") == 0.0
            assert check(task, "banana split") < 0.5
            wrong = task.reference.replace(task.answer, task.answer + "7")  # a longer, wrong final answer
            assert check(task, wrong) < 1.0, (task, wrong)


# ---------------------------------------------------------------------------------------------- open families: diversity
@pytest.mark.parametrize("name", kinds("open"))
def test_reference_samples_are_distinct_valid_answers(name):
    distinct = []
    for level in range(1, FAMILIES[name].levels + 1):
        for seed in range(20):
            task = make_task(name, level, seed)
            samples = reference_samples(task, 8, seed=0)
            assert len(samples) == 8 and all(check(task, s) == 1.0 for s in samples)
            assert samples == reference_samples(task, 8, seed=0)
            assert samples != reference_samples(task, 8, seed=1)
            distinct.append(len(set(samples)))
    assert min(distinct) >= 2 and sum(distinct) / len(distinct) >= 4, distinct


def test_reference_samples_of_exact_families_repeat_the_reference():
    task = make_task("add", 2, 0)
    assert reference_samples(task, 3, seed=5) == [task.reference] * 3


# ---------------------------------------------------------------------------------------------- parser
@pytest.mark.parametrize("name,level", ALL)
def test_parse_recovers_every_generated_task(name, level):
    for seed in SEEDS:
        task = make_task(name, level, seed)
        for variant in (task.prompt, task.prompt.upper(), "  " + task.prompt.rstrip(".?") + " !! ",
                        task.prompt.replace(" ", "  ")):
            got = parse(variant)
            assert got is not None, variant
            assert (got.family, got.params, got.level, got.answer) == (name, task.params, level, task.answer)
            assert got.seed == -1 and got.prompt == variant.strip()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_parse_accepts_every_phrasing(name):
    fam = FAMILIES[name]
    for template in fam.phrasings:  # each template, filled with fields the generator draws
        for seed in range(20):
            fields = fam.generate(random.Random(seed), fam.levels)
            got = parse(template.format(**fields))
            assert got is not None and got.family == name, template
            assert got.params == fam.to_params(fields)


def test_parse_tolerates_spacing_and_a_few_variants():
    assert parse("what is 3+4").params == (("a", 3), ("b", 4))
    assert parse("Find the max of 3,8,5").answer == "8"
    assert parse("Give an even number between 50 and 10.").params == (("parity", "even"), ("lo", 10), ("hi", 50))
    assert parse("Write 2 numbers that sum to 7").params == (("k", 2), ("n", 7))
    assert parse("Bob has 10 coins, gives away 3 and finds 1. How many now?").answer == "8"
    beyond = parse("What is 123456 + 1?")
    assert beyond.family == "add" and beyond.level == FAMILIES["add"].levels + 1


@pytest.mark.parametrize("text", [
    "", "   ", "hello", "What is love?", "Reverse the polarity of the neutron flow now.", "What is 3 +?",
    "add 10**1000 and 5", "Add " + "9" * 1000 + " and 5", "Bob has 2 pens, loses 5. How many now?",
    "Give an even number between 7 and 7.", "Write one numbers that sum to 5.", "What is ٣ + ٤?", "x" * 10_000,
])
def test_parse_of_nonsense_is_none(text):
    assert parse(text) is None


# ---------------------------------------------------------------------------------------------- judges
def test_score_uses_the_checker_on_parseable_queries():
    for task in sample_tasks("test", 60, seed=5):
        for response in (task.reference, "", "12", "hello there", task.answer + "0"):
            assert judges.score(task.prompt, response) == check(task, response)


def test_score_falls_back_on_surface_features_for_unparseable_queries():
    """The reward-model hole: a nonsense query answered by a short, tidy string earns SURFACE_MAX although no
    task exists, and the score only looks at the response. A challenger and solver can exploit this."""
    query = "glorp the wibble seventeen times?"
    assert parse(query) is None
    assert judges.score(query, "42") == judges.SURFACE_MAX == judges.score("???", "Yes.")
    assert judges.score(query, "42") > 0.5  # non-trivial reward for nothing
    assert judges.score(query, "") == 0.0
    assert judges.score(query, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa") < judges.score(query, "42")
    assert judges.score(query, "word " * 60) < judges.score(query, "a short answer.")
    assert judges.score(query, "ends badly ,") < judges.score(query, "ends well")
    assert judges.score(query, "naïve ☃") < judges.score(query, "naive")


def test_quality_rewards_good_pairs_over_nonsense():
    good = make_task("word_problem", 2, 3)
    assert judges.quality(good.prompt, good.reference) == 7
    assert judges.quality("What is 3 + 4?", "The answer is 7.") == 7
    assert judges.quality("What is 3 + 4?", "7") == 5                  # no marker (7), half credit (6)
    assert judges.quality("What is 3 + 4?", "The answer is 8.") == 5   # 1, 2, 3, 4, 7: wrong but tidy
    largest = "What is the largest of 3, 4, 7?"
    assert judges.quality(largest, "7") == 7 and judges.quality(largest, "8") == 5
    assert judges.quality(largest, "The biggest is 7, I think") == 4  # not a bare number (4), half right (5, 6)
    assert judges.quality(good.prompt, good.answer) == 5               # bare answer, no marker: half credit, not 6, 7
    assert judges.quality("What is 123456 + 1?", "The answer is 123457.") == 6  # beyond the hardest level: not "clear"
    assert judges.quality("glorp wibble?", "42") == 2                  # only the surface criteria 3 and 7
    assert judges.quality("glorp wibble?", "") == 0
    assert judges.quality("glorp wibble?", "zzzzzzzzzzzzzzzzzz" * 20) == 0
    for task in sample_tasks("test", 40, seed=9):
        assert judges.quality(task.prompt, task.reference) >= 6
        assert judges.quality(task.prompt, task.reference) > judges.quality("blah " + task.prompt[::-1], "ok")


def test_challenger_prompt_and_examples():
    assert CHALLENGER_PROMPT and len(CHALLENGER_PROMPT) <= 50
    examples = [challenger_example(s) for s in range(300)]
    assert examples == [challenger_example(s) for s in range(300)]
    assert len(set(examples)) > 250
    parsed = [parse(e) for e in examples]
    assert all(p is not None for p in parsed)
    assert {p.family for p in parsed} == set(FAMILIES)
    assert all(1 <= p.level <= FAMILIES[p.family].levels for p in parsed)


# ---------------------------------------------------------------------------------------------- never raise
WEIRD = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=100),
    st.sampled_from(["", " ", "\x00", "\n\n", "The answer is", "the answer is " + "9" * 5000, "٣٤٥", "𝟙𝟚",
                     "add 10**1000 and 5", "What is " + "9" * 5000 + " + 1?", "Reverse .", "-0", "0" * 50]),
    st.builds(lambda t, junk: t + junk, st.sampled_from([make_task(n, l, 0).prompt for n, l in ALL]), st.text(max_size=20)),
)


@settings(max_examples=300, deadline=None)
@given(query=WEIRD, response=WEIRD)
def test_judges_never_raise_and_stay_in_range(query, response):
    s = judges.score(query, response)
    q = judges.quality(query, response)
    assert isinstance(s, float) and 0.0 <= s <= 1.0
    assert isinstance(q, int) and 0 <= q <= 7
    task = parse(query)
    assert task is None or task.family in FAMILIES


@settings(max_examples=300, deadline=None)
@given(name_level=st.sampled_from(ALL), seed=st.integers(0, 10**7), response=WEIRD)
def test_check_never_raises_and_stays_in_range(name_level, seed, response):
    task = make_task(*name_level, seed)
    assert 0.0 <= check(task, response) <= 1.0
    assert 0.0 <= check(task, task.reference + response) <= 1.0


def test_checker_reward_is_the_verifier_on_every_family_even_withheld_ones():
    """verifier_reward leaves JEPO's unverifiable families without a reward (NaN); checker_reward, the oracle of
    the experiments, scores them too, 0/1, and 0 for a query that is no task."""
    import math

    from langplay.tinyworld.datasets import checker_reward, verifier_reward

    spell, largest = make_task("spell", 3, 1), make_task("max", 2, 1)
    assert not FAMILIES["spell"].verifiable and FAMILIES["max"].verifiable
    queries = [spell.prompt, spell.prompt, largest.prompt, largest.prompt, "glorp?"]
    answers = [spell.reference, spell.reference.replace("hundred", "thousand"), largest.answer, largest.answer + "1",
               "42"]
    assert checker_reward(queries, answers) == [1.0, 0.0, 1.0, 0.0, 0.0]
    withheld = verifier_reward(queries, answers)
    assert math.isnan(withheld[0]) and withheld[2:4] == [1.0, 0.0]


# ------------------------------------------------------------------------------ demonstration sets (IRL)
def test_valid_answers_are_several_for_open_tasks_and_the_reference_otherwise():
    from langplay.tinyworld.datasets import valid_answers

    add, = sample_tasks("train", 1, 0, families=["add"])
    assert valid_answers(add, 4) == [add.reference]
    for task in sample_tasks("train", 12, 0, families=kinds("open")):
        answers = valid_answers(task, 4)
        assert answers == reference_samples(task, 4, task.seed) and all(check(task, a) == 1.0 for a in answers)


def test_demonstration_units_are_exact_prompts_or_one_open_prompt_with_several_answers():
    from langplay.tinyworld.datasets import demonstration_units

    units = demonstration_units(40, seed=3, k=4)
    assert units == demonstration_units(40, seed=3, k=4) and units != demonstration_units(40, seed=4, k=4)
    assert len(units) == 10 and all(len(unit) == 4 for unit in units)
    kinds_of = [{FAMILIES[r["family"]].kind for r in unit} for unit in units]
    assert kinds_of == [{"exact"}] * 5 + [{"open"}] * 5  # half the units (and rows) of each kind
    for unit, (kind,) in zip(units, kinds_of):
        tasks = [parse(r["prompt"]) for r in unit]
        assert all(split_of(t.family, t.params) == "train" for t in tasks)
        assert all(check(t, r["reference"]) == 1.0 for t, r in zip(tasks, unit))
        prompts = {r["prompt"] for r in unit}
        assert len(prompts) == (1 if kind == "open" else 4)
    assert any(len({r["reference"] for r in unit}) > 1 for unit in units[5:])  # several expert continuations
    assert [len(u) for u in demonstration_units(5, seed=0, k=4)] == [4, 4]  # at least one unit of each kind


def test_unit_order_keeps_a_step_s_units_whole_and_interleaves_their_rows():
    from langplay.tinyworld.datasets import unit_order

    units = [[f"{name}{j}" for j in range(2)] for name in "abc"]
    rows = unit_order(units, total=10, seed=0, per_step=4)
    assert rows == unit_order(units, total=10, seed=0, per_step=4) and len(rows) == 10
    for start in (0, 4, 8):  # a step (one an epoch: the third unit fills none): two units u, v as u0 v0 u1 v1
        u, v = rows[start][0], rows[start + 1][0]
        assert u != v and rows[start : start + 4] == [u + "0", v + "0", u + "1", v + "1"][: 10 - start]
    for per_step in (3, 8):  # not whole units; more units than there are
        with pytest.raises(ValueError, match="whole units"):
            unit_order(units, total=8, seed=0, per_step=per_step)
