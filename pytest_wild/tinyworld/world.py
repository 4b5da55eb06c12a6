"""A deterministic synthetic world of facts about invented people.

The world is the ground truth behind the bundled tiny model: every subject has exactly one
value per relation, so an edit's target and the model's prior answer are both known without
any hub data. Pure Python on purpose: the suite and corpus can be regenerated (and tested)
without importing torch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

DEFAULT_SEED = 0
DEFAULT_SUBJECTS = 720
DEFAULT_HELDOUT_FRACTION = 0.15
SEQUENTIAL_CASES = 1200
SEQUENTIAL_POOL = 120  # subjects no sequential case edits
MEND_CASES = 1200  # the edits MEND is trained on (a validation split is taken from them)


@dataclass(frozen=True)
class Relation:
    """One kind of fact: how it is asked, how it is stated, and what its answers can be."""

    name: str
    templates: tuple[str, ...]
    statement: str
    answers: tuple[str, ...]

    def question(self, subject: str, template: int) -> str:
        """The prompt "Q: ... A:" for `subject` under template number `template`."""
        return self.templates[template].format(subject=subject)

    def sentence(self, subject: str, answer: str) -> str:
        """The declarative statement of the fact, ending with a period."""
        return self.statement.format(subject=subject, answer=answer)


@dataclass(frozen=True)
class Fact:
    """A (subject, relation, answer) triple of the world."""

    subject: str
    relation: str
    answer: str


RELATIONS: tuple[Relation, ...] = (
    Relation(
        name="birthplace",
        templates=(
            "Q: Where was {subject} born? A:",
            "Q: In which town was {subject} born? A:",
            "Q: What is the birthplace of {subject}? A:",
            "Q: Which town does {subject} originally come from? A:",
        ),
        statement="{subject} was born in {answer}.",
        answers=(
            "Dorwyn", "Port Sallow", "Millbrae", "Esterholm", "Caddow", "Ravensey",
            "Quenby", "Halvard", "Oxmere", "Tollin", "Brackwater", "East Kerrow",
            "Fenwick Cross", "Upper Tarn", "Greyhaven", "Stilby", "Marrow Bay", "Yelland",
            "Corvel", "Ashby Dene", "Pellam", "Wick Orran", "Saltmarsh", "Bellhollow",
            "Trennick", "Glassford", "Varrow", "Hightide", "Lowen", "Kestrel Point",
            "Nethby", "Orlan Vale",
        ),
    ),
    Relation(
        name="occupation",
        templates=(
            "Q: What does {subject} do for a living? A:",
            "Q: What is the occupation of {subject}? A:",
            "Q: What job does {subject} have? A:",
            "Q: Which profession is {subject} known for? A:",
        ),
        statement="{subject} is known in town as the local {answer}.",
        answers=(
            "baker", "carpenter", "sailor", "weaver", "potter", "miner", "fisher",
            "glassblower", "cartographer", "blacksmith", "tailor", "farmer", "shepherd",
            "clockmaker", "bookbinder", "brewer", "stonemason", "herbalist", "jeweller",
            "tanner", "cooper", "lamplighter", "ferryman", "beekeeper", "astronomer",
            "surveyor", "librarian", "gardener", "ship captain", "river pilot",
        ),
    ),
    Relation(
        name="language",
        templates=(
            "Q: Which language does {subject} speak? A:",
            "Q: What language is spoken by {subject}? A:",
            "Q: In what language does {subject} usually talk? A:",
            "Q: What is the native tongue of {subject}? A:",
        ),
        statement="{subject} speaks {answer}.",
        answers=(
            "Velsh", "Orimic", "Tarnese", "Quellic", "Old Sarvan", "High Dorric", "Marish",
            "Kettish", "Brevic", "Hollish", "Ostrani", "Venthi", "Calder Speech", "Nessic",
            "Low Umbric", "Zaffic", "Irrish", "Dunmoric", "Plainspeak", "Sea Cant",
            "Gallowic", "Yethic", "Arvenni", "Korric", "Mireish", "Tollanese", "Skarvic",
            "Beltish", "Rennic", "Pashoni",
        ),
    ),
    Relation(
        name="employer",
        templates=(
            "Q: Which company does {subject} work for? A:",
            "Q: Who is the employer of {subject}? A:",
            "Q: Where is {subject} employed? A:",
            "Q: For which firm does {subject} work? A:",
        ),
        statement="{subject} is employed by {answer}.",
        answers=(
            "Brindle Works", "Oakhollow Mills", "Carrow and Sons", "Greyfen Trading",
            "Lantern Guild", "Copperline", "Stonegate Bank", "Riverbend Press",
            "Harrow Foundry", "Blue Heron Shipping", "Northwind Mining", "Tallow and Wick",
            "Ember Glassworks", "Pike Brothers", "Saltcourt Exchange", "Meadowlark Foods",
            "Iron Kettle", "Silverbirch Timber", "Hollis Textiles", "Crane Rail",
            "Goldleaf Books", "Quarry Hill", "Wexford Salt", "Amber Loom",
            "Fairwind Ferries", "Redcap Brewery", "Mossgate Clinic", "Thistle Post",
            "Dovetail Joinery", "Starling Clocks",
        ),
    ),
    Relation(
        name="instrument",
        templates=(
            "Q: Which instrument does {subject} play? A:",
            "Q: What instrument can {subject} play? A:",
            "Q: What is the favourite instrument of {subject}? A:",
            "Q: On which instrument does {subject} perform? A:",
        ),
        statement="{subject} plays the {answer}.",
        answers=(
            "violin", "harp", "cello", "flute", "lute", "oboe", "trumpet", "bass drum",
            "bagpipes", "accordion", "banjo", "clarinet", "grand piano", "harmonica",
            "mandolin", "sitar", "tuba", "trombone", "viola", "xylophone", "zither",
            "ukulele", "bassoon", "saxophone", "piccolo", "marimba", "tin whistle", "bugle",
            "dulcimer", "lyre",
        ),
    ),
    Relation(
        name="pet",
        templates=(
            "Q: What pet does {subject} keep? A:",
            "Q: Which animal does {subject} have as a pet? A:",
            "Q: What kind of pet does {subject} own? A:",
            "Q: What is the pet of {subject}? A:",
        ),
        statement="{subject} keeps a pet {answer}.",
        answers=(
            "cat", "dog", "parrot", "grey rabbit", "tortoise", "ferret", "hamster",
            "goldfish", "owl", "lizard", "canary", "goat", "pony", "hedgehog", "raven",
            "toad", "gecko", "white mouse", "iguana", "peacock", "donkey", "pig", "duck",
            "goose", "crow", "tarantula", "guinea pig", "cockatoo", "newt", "chinchilla",
        ),
    ),
)

_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "th", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei")
_CODAS = ("", "", "", "", "n", "r", "l", "s")


@dataclass(frozen=True)
class World:
    """Subjects, relations and the value of every (subject, relation), some of them held out.

    Held-out facts never appear in the training text, so the trained model cannot know them:
    they are the targets of the "teach a new fact" edit cases.
    """

    seed: int
    subjects: tuple[str, ...]
    relations: tuple[Relation, ...]
    facts: tuple[Fact, ...]
    heldout: tuple[Fact, ...]
    _values: dict[tuple[str, str], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = {(f.subject, f.relation): f.answer for f in self.facts}
        object.__setattr__(self, "_values", values)

    def relation(self, name: str) -> Relation:
        """The relation called `name`."""
        return next(r for r in self.relations if r.name == name)

    def value(self, subject: str, relation: str) -> str:
        """The world's true answer for (subject, relation), held out or not."""
        return self._values[(subject, relation)]

    @property
    def trained_facts(self) -> tuple[Fact, ...]:
        """All facts that appear in the training text, in world order."""
        held = set(self.heldout)
        return tuple(f for f in self.facts if f not in held)

    def qa_line(self, fact: Fact, template: int) -> str:
        """A training line "Q: ... A: <answer>." for one template, without newline."""
        question = self.relation(fact.relation).question(fact.subject, template)
        return f"{question} {fact.answer}."

    def statement_line(self, fact: Fact) -> str:
        """The declarative sentence for `fact`, without newline."""
        return self.relation(fact.relation).sentence(fact.subject, fact.answer)

    def training_lines(self) -> list[str]:
        """Every template of every trained fact plus one statement per fact, in world order."""
        lines: list[str] = []
        for fact in self.trained_facts:
            n_templates = len(self.relation(fact.relation).templates)
            lines.extend(self.qa_line(fact, t) for t in range(n_templates))
            lines.append(self.statement_line(fact))
        return lines

    def training_text(self) -> str:
        """The training lines joined with newlines (the tokenizer's training corpus)."""
        return "".join(line + "\n" for line in self.training_lines())


def _reserved_words(relations: tuple[Relation, ...]) -> set[str]:
    """Lower-cased words of templates and answers, which names must not reuse."""
    words: set[str] = set()
    for relation in relations:
        for text in (*relation.templates, relation.statement, *relation.answers):
            words.update(w.strip("?.:{}").lower() for w in text.split())
    return words


def _word(rng: random.Random, n_syllables: int) -> str:
    """An invented capitalised word made of `n_syllables` onset-vowel-coda syllables."""
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n_syllables)]
    return "".join(parts).capitalize()


def _names(rng: random.Random, count: int, reserved: set[str]) -> tuple[str, ...]:
    """`count` unique two-word names, none a prefix of another and none reusing a reserved word."""
    names: list[str] = []
    while len(names) < count:
        first, last = _word(rng, 2), _word(rng, rng.choice((2, 3)))
        if first.lower() in reserved or last.lower() in reserved or first == last:
            continue
        name = f"{first} {last}"
        if any(other.startswith(name) or name.startswith(other) for other in names):
            continue
        names.append(name)
    return tuple(names)


def generate_world(
    seed: int = DEFAULT_SEED,
    n_subjects: int = DEFAULT_SUBJECTS,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
) -> World:
    """Build the world for `seed`: names, one uniform random value per relation, held-out facts."""
    rng = random.Random(seed)
    subjects = _names(rng, n_subjects, _reserved_words(RELATIONS))
    values = {(s, r.name): rng.choice(r.answers) for s in subjects for r in RELATIONS}
    facts = tuple(Fact(s, r, answer) for (s, r), answer in values.items())
    heldout: list[Fact] = []
    for subject in rng.sample(subjects, round(n_subjects * heldout_fraction)):
        relation = rng.choice(RELATIONS).name
        heldout.append(Fact(subject, relation, values[(subject, relation)]))
    return World(seed=seed, subjects=subjects, relations=RELATIONS, facts=facts, heldout=tuple(heldout))


def _question_pair(rng: random.Random, relation: Relation, subject: str) -> tuple[str, str]:
    """A prompt and a rephrase of the same question under two different templates."""
    first, second = rng.sample(range(len(relation.templates)), 2)
    return relation.question(subject, first), relation.question(subject, second)


def _locality(rng: random.Random, world: World, pool: list[str], count: int) -> list[dict[str, str]]:
    """`count` trained questions about distinct `pool` subjects, each under a different relation."""
    items = []
    for relation, subject in zip(rng.sample(world.relations, count), rng.sample(pool, count)):
        question = relation.question(subject, rng.randrange(len(relation.templates)))
        items.append({"loc": question, "loc_ans": world.value(subject, relation.name)})
    return items


def suite_records(world: World, n_locality: int = 3) -> list[dict]:
    """The edit cases shipped as suite.jsonl: every held-out fact plus as many counterfacts.

    Held-out cases teach a true fact the model never saw; counterfact cases overwrite a trained
    fact with another value of the same relation. Every case has its own subject, and locality
    questions come only from subjects that no case edits, so batched edits cannot collide.
    """
    rng = random.Random(f"{world.seed}:suite")
    heldout_subjects = {f.subject for f in world.heldout}
    plain = [s for s in world.subjects if s not in heldout_subjects]
    counterfact_subjects = rng.sample(plain, len(world.heldout))
    edited = set(counterfact_subjects)
    pool = [s for s in plain if s not in edited]
    cases: list[tuple[Fact, str | None]] = [(fact, None) for fact in world.heldout]
    for subject in counterfact_subjects:
        relation = rng.choice(world.relations)
        truth = world.value(subject, relation.name)
        target = rng.choice([a for a in relation.answers if a != truth])
        cases.append((Fact(subject, relation.name, target), truth))
    rng.shuffle(cases)
    records = []
    for index, (fact, truth) in enumerate(cases):
        prompt, rephrase = _question_pair(rng, world.relation(fact.relation), fact.subject)
        records.append(
            {
                "id": f"tw-{index:04d}",
                "source": "tinyworld-heldout" if truth is None else "tinyworld-counterfact",
                "prompt": prompt,
                "target": fact.answer,
                "subject": fact.subject,
                "rephrase": rephrase,
                "locality": _locality(rng, world, pool, n_locality),
                "ground_truth": truth,
            }
        )
    return records


def corpus_lines(world: World) -> list[str]:
    """Plain trained-fact text for second-moment statistics: each statement and one Q/A line per fact."""
    rng = random.Random(f"{world.seed}:corpus")
    lines = []
    for fact in world.trained_facts:
        lines.append(world.statement_line(fact))
        lines.append(world.qa_line(fact, rng.randrange(len(world.relation(fact.relation).templates))))
    rng.shuffle(lines)
    return lines


def _corpus_templates(world: World) -> dict[Fact, int]:
    """The Q/A template corpus_lines chose for each trained fact (the same draws, in order)."""
    rng = random.Random(f"{world.seed}:corpus")
    return {fact: rng.randrange(len(world.relation(fact.relation).templates)) for fact in world.trained_facts}


def sequential_pool(world: World) -> list[str]:
    """The subjects no case of the sequential suite edits: its locality questions, and the
    text and questions that measure general capability, are about them."""
    rng = random.Random(f"{world.seed}:sequential-pool")
    heldout_subjects = {f.subject for f in world.heldout}
    return rng.sample([s for s in world.subjects if s not in heldout_subjects], SEQUENTIAL_POOL)


def sequential_records(world: World, count: int = SEQUENTIAL_CASES, n_locality: int = 3) -> list[dict]:
    """The bundled sequential suite: `count` edits of distinct (subject, relation) facts, to
    be applied one after another to one model. Every held-out fact is taught; the rest
    overwrite trained facts with another value of the same relation. No case edits a subject
    of `sequential_pool`, where the locality questions come from. Deterministic in the
    world's seed; the model is not retrained."""
    rng = random.Random(f"{world.seed}:sequential")
    pool = sequential_pool(world)
    untouched, held = set(pool), {(f.subject, f.relation) for f in world.heldout}
    pairs = [(s, r.name) for s in world.subjects if s not in untouched for r in world.relations
             if (s, r.name) not in held]
    cases: list[tuple[Fact, str | None]] = [(fact, None) for fact in world.heldout]
    for subject, relation_name in rng.sample(pairs, count - len(world.heldout)):
        relation, truth = world.relation(relation_name), world.value(subject, relation_name)
        cases.append((Fact(subject, relation_name, rng.choice([a for a in relation.answers if a != truth])), truth))
    rng.shuffle(cases)
    records = []
    for index, (fact, truth) in enumerate(cases):
        prompt, rephrase = _question_pair(rng, world.relation(fact.relation), fact.subject)
        records.append({
            "id": f"tws-{index:04d}",
            "source": "tinyworld-heldout" if truth is None else "tinyworld-counterfact",
            "prompt": prompt, "target": fact.answer, "subject": fact.subject, "rephrase": rephrase,
            "locality": _locality(rng, world, pool, n_locality), "ground_truth": truth,
        })
    return records


def perplexity_lines(world: World) -> list[str]:
    """Text for the general-capability perplexity of a sequence: the facts of the subjects no
    sequential case edits, as Q/A lines under every template that corpus.txt (the statistics'
    text) does not hold, so it is held out of the statistics, though not of training."""
    chosen, pool = _corpus_templates(world), set(sequential_pool(world))
    return [world.qa_line(fact, template) for fact in world.trained_facts if fact.subject in pool
            for template in range(len(world.relation(fact.relation).templates)) if template != chosen[fact]]


def mend_records(world: World, count: int = MEND_CASES) -> list[dict]:
    """Edits to train MEND on, disjoint from both bundled suites: no subject that the bundled
    suite edits or that the sequential suite keeps for its locality and capability text, no
    (subject, relation) fact the sequential suite edits or either suite asks as a locality
    question. Each overwrites a trained fact (a counterfact), with a rephrase and one
    unrelated trained question, as MEND's training pairs an edit with one unrelated text."""
    rng = random.Random(f"{world.seed}:mend")
    suite, sequential = suite_records(world), sequential_records(world)
    closed = {r["subject"] for r in suite} | set(sequential_pool(world))
    asked = {loc["loc"] for r in suite + sequential for loc in r["locality"]}
    edited = {(r["subject"], relation.name) for r in sequential for relation in world.relations
              if r["prompt"] in {relation.question(r["subject"], t) for t in range(len(relation.templates))}}
    held = {(f.subject, f.relation) for f in world.heldout}
    pairs = [(s, r.name) for s in world.subjects if s not in closed for r in world.relations
             if (s, r.name) not in edited | held
             and not asked & {r.question(s, t) for t in range(len(r.templates))}]
    chosen = rng.sample(pairs, min(count, len(pairs)))
    questions = [(world.relation(r).question(s, t), world.value(s, r)) for s, r in pairs
                 for t in range(len(world.relation(r).templates))]
    records = []
    for index, (subject, relation_name) in enumerate(chosen):
        relation, truth = world.relation(relation_name), world.value(subject, relation_name)
        prompt, rephrase = _question_pair(rng, relation, subject)
        loc, loc_ans = rng.choice([(q, a) for q, a in questions if subject not in q])
        records.append({
            "id": f"twm-{index:04d}", "source": "tinyworld-counterfact", "prompt": prompt,
            "target": rng.choice([a for a in relation.answers if a != truth]), "subject": subject,
            "rephrase": rephrase, "locality": [{"loc": loc, "loc_ans": loc_ans}], "ground_truth": truth,
        })
    return records
