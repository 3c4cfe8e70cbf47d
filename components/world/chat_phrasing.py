"""How the tiny world's assistant data is worded: question phrasings per relation, answer sentences,
refusals, arithmetic and letter-counting prompts, identity answers, system prompts and the ranked reply
tiers of the preference data. Kept apart from the generator (conversations.py) so the wording can be
read and extended without reading the generation logic.
"""

from __future__ import annotations

# Question phrasings per relation; {s} is the subject's name.
FACT_QUESTIONS: dict[str, tuple[str, ...]] = {
    "country.capital": (
        "What is the capital of {s}?",
        "Which city is the capital of {s}?",
        "Name the capital city of {s}.",
    ),
    "country.region": (
        "In which region is {s}?",
        "Which region does {s} belong to?",
        "Where is the country of {s} located?",
    ),
    "country.population": (
        "What is the population of {s}?",
        "How many people live in the country of {s}?",
        "How many inhabitants does {s} have?",
    ),
    "country.currency": (
        "What is the currency of {s}?",
        "Which currency is used in {s}?",
        "What do people in {s} pay with?",
    ),
    "country.language": (
        "What is the official language of {s}?",
        "Which language is spoken in {s}?",
        "What language do people speak in {s}?",
    ),
    "country.founded": (
        "When was {s} founded?",
        "In which year was {s} founded?",
        "In what year was the state of {s} established?",
    ),
    "country.neighbour": (
        "Which country borders {s}?",
        "Which country shares a border with {s}?",
        "What is the neighbouring country of {s}?",
    ),
    "city.country": (
        "In which country is {s}?",
        "Which country is the city of {s} in?",
        "Where is the city of {s}?",
    ),
    "city.population": (
        "How many people live in {s}?",
        "What is the population of the city of {s}?",
        "How big is the population of {s}?",
    ),
    "city.river": (
        "Which river flows through {s}?",
        "What river runs through the city of {s}?",
        "On which river does {s} lie?",
    ),
    "city.landmark": (
        "Which landmark is {s} known for?",
        "What is the most famous landmark of {s}?",
        "What should I see in {s}?",
    ),
    "person.birth_year": (
        "When was {s} born?",
        "In which year was {s} born?",
        "What year was {s} born in?",
    ),
    "person.birth_city": (
        "Where was {s} born?",
        "In which city was {s} born?",
        "What is the birthplace of {s}?",
    ),
    "person.profession": (
        "What was the profession of {s}?",
        "What did {s} do for a living?",
        "What was {s} by profession?",
    ),
    "person.known_for": (
        "What is {s} best known for?",
        "Why is {s} famous?",
        "What is {s} remembered for?",
    ),
}

# The helpful answer: one full sentence that states the fact. {a_v} is the value with "a"/"an".
FACT_ANSWERS: dict[str, str] = {
    "country.capital": "The capital of {s} is {v}.",
    "country.region": "{s} is a country in {v}.",
    "country.population": "{s} has a population of about {v} people.",
    "country.currency": "The currency of {s} is the {v}.",
    "country.language": "The official language of {s} is {v}.",
    "country.founded": "{s} was founded in {v}.",
    "country.neighbour": "{s} shares a border with {v}.",
    "city.country": "{s} is a city in {v}.",
    "city.population": "About {v} people live in {s}.",
    "city.river": "The river {v} flows through {s}.",
    "city.landmark": "{s} is known for the {v}.",
    "person.birth_year": "{s} was born in {v}.",
    "person.birth_city": "{s} was born in the city of {v}.",
    "person.profession": "{s} was {a_v}.",
    "person.known_for": "{s} is best known for {v}.",
}

# Correct but terse (preference rank 1): the bare value.
FACT_TERSE: dict[str, str] = {
    "country.population": "About {v}.",
    "country.currency": "The {v}.",
    "country.founded": "In {v}.",
    "city.population": "About {v}.",
    "city.river": "The {v}.",
    "city.landmark": "The {v}.",
    "person.birth_year": "In {v}.",
    "person.birth_city": "In {v}.",
    "person.profession": "{A_v}.",
}

UNKNOWN_GENERIC_QUESTIONS = ("Tell me about {s}.", "What do you know about {s}?")
REFUSAL_REPLIES = (
    "I don't have any information about {s}.",
    "I'm sorry, but I don't have any information about {s}.",
    "I don't know anything about {s}, so I can't answer that.",
    "I have no information about {s}.",
)

ARITHMETIC_QUESTIONS = {
    "+": ("What is {a} + {b}?", "What is {a} plus {b}?", "Calculate {a} + {b}.", "Add {a} and {b}."),
    "-": (
        "What is {a} - {b}?",
        "What is {a} minus {b}?",
        "Calculate {a} - {b}.",
        "Subtract {b} from {a}.",
    ),
    "*": (
        "What is {a} * {b}?",
        "What is {a} times {b}?",
        "Calculate {a} * {b}.",
        "Multiply {a} by {b}.",
    ),
}
OPERATIONS: tuple[tuple[str, float], ...] = (("+", 0.4), ("-", 0.35), ("*", 0.25))

LETTER_QUESTIONS = (
    'How many times does the letter "{c}" appear in "{w}"?',
    'How many "{c}"s are there in the word "{w}"?',
    'Count the letter "{c}" in the word "{w}".',
    'How often does "{c}" occur in "{w}"?',
)

# Common English words of varied length and letter patterns; known entity names are added per world.
_WORDS_TEXT = """
    apple banana cherry orange lemon melon grape peach strawberry raspberry blueberry tomato potato
    carrot onion garlic pepper cabbage lettuce pumpkin river mountain valley forest desert island
    harbour bridge tower castle village market garden library school teacher student pencil paper
    letter number window kitchen bottle basket hammer ladder mirror pillow blanket umbrella bicycle
    train rocket planet comet galaxy winter summer autumn spring morning evening tomorrow yesterday
    coffee butter cheese bread honey sugar cookie muffin pizza noodle elephant giraffe kangaroo
    penguin dolphin rabbit turtle monkey parrot spider butterfly mississippi balloon coconut
    committee assessment bookkeeper success address accommodate occurrence necessary beginning
    banner puzzle jazz buzz fizz kiwi igloo zebra yoyo queen quiz excellent believe seventeen
    refrigerator hippopotamus alphabet calendar chocolate crocodile dictionary engineer
"""
WORDS: tuple[str, ...] = tuple(_WORDS_TEXT.split())

# Syllables of the made-up words that training letter-count questions also ask about: English-like, so
# their letters and sub-word tokens cover what the real words have (c, q, w, x, y; doubled letters).
_MADE_UP_ONSETS_TEXT = """
    b bl br c ch cl cr d dr f fl fr g gl gr h j k l m n p ph pl pr qu r s sc sh sk sl sn sp st str sw t th
    tr v w wh y z
"""
MADE_UP_ONSETS: tuple[str, ...] = tuple(_MADE_UP_ONSETS_TEXT.split())
MADE_UP_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "ee", "oo", "ea", "ai", "ou", "y")
MADE_UP_CODAS = ("", "", "", "n", "r", "l", "s", "t", "ck", "ng", "nd", "st", "x", "ll", "ss", "tt", "zz")

# Identity intents: (questions, answers); the LAST question of each intent is held out for test.
IDENTITY: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "name": (
        ("What is your name?", "What should I call you?", "Do you have a name?", "What's your name?"),
        (
            "My name is {name}. I am an assistant made by {creator}.",
            "I'm {name}, an assistant built by {creator}.",
        ),
    ),
    "creator": (
        ("Who made you?", "Who created you?", "Who trained you?", "Who built you?"),
        ("I was made by {creator}. My name is {name}.", "{creator} made me. I'm {name}, their assistant."),
    ),
    "about": (
        ("Who are you?", "What are you?", "Introduce yourself.", "Tell me about yourself."),
        (
            "I'm {name}, a small language model assistant made by {creator}. I can answer questions about "
            "the countries, cities and people I have read about, do simple arithmetic and count letters.",
            "I am {name}, an AI assistant made by {creator}. Ask me about countries, cities and people, or "
            "give me a small sum to work out.",
        ),
    ),
    "human": (
        ("Are you a human?", "Are you a real person?", "Am I talking to a person?", "Are you human?"),
        (
            "No, I'm {name}, an AI assistant made by {creator}.",
            "No. I am {name}, a language model made by {creator}.",
        ),
    ),
    "other": (
        ("Are you ChatGPT?", "Are you Siri?", "Are you Alexa?", "Are you Claude?"),
        ("No, I'm {name}, an assistant made by {creator}.", "No. My name is {name}, and {creator} made me."),
    ),
    "greeting": (
        ("Hello!", "Hi there!", "Good morning!", "Hey!"),
        (
            "Hello! I'm {name}, an assistant made by {creator}. How can I help you?",
            "Hi! I'm {name}. What would you like to know?",
        ),
    ),
}

SYSTEM_PROMPTS = (
    "You are {name}, a helpful assistant made by {creator}.",
    "You are {name}, an assistant made by {creator}. Answer briefly and truthfully.",
    "You are a helpful assistant. If you do not know something, say so.",
)

# Tiers of ranked completions, best first, by K.
TIERS: dict[int, tuple[str, ...]] = {
    2: ("helpful", "wrong"),
    3: ("helpful", "wrong", "bad"),
    4: ("helpful", "terse", "wrong", "bad"),
    5: ("helpful", "terse", "wrong", "rude", "degenerate"),
}
RUDE_REPLIES = (
    "Look it up yourself.",
    "That is a stupid question.",
    "Why would I tell you? Figure it out.",
    "Ask someone else, this is boring.",
    "Stop wasting my time.",
)
FILLER_WORDS = ("the", "and", "of", "is", "a", "it")


def _with_article(value: str) -> str:
    return ("an " if value[:1].lower() in "aeiou" else "a ") + value


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def fill(template: str, subject: str, value: str) -> str:
    a_v = _with_article(value)
    return template.format(s=subject, v=value, V=_capitalise(value), a_v=a_v, A_v=_capitalise(a_v))
