"""Write the shipped puzzle set: hand-written excerpts labelled by each puzzle's true rule."""

import json
import re
import sys

TOKEN = re.compile(r"\n|[ \t]*[A-Za-z0-9_]+|[ \t]*[^\sA-Za-z0-9_]|[ \t]+")


def tokens(text):
    return TOKEN.findall(text)


def words(*names):
    wanted = {name.lower() for name in names}
    return lambda toks, i: 10.0 if toks[i].strip().lower() in wanted else 0.0


def exact(*names):
    wanted = set(names)
    return lambda toks, i: 10.0 if toks[i].strip() in wanted else 0.0


def before(mark):
    return lambda toks, i: 10.0 if i + 1 < len(toks) and toks[i + 1].strip() == mark and toks[i].strip() else 0.0


def after(mark):
    return lambda toks, i: 10.0 if i > 0 and toks[i - 1].strip() == mark else 0.0


PUZZLES = [
    (
        "colors",
        "words that name colors",
        ["words that name animals", "numbers", "names of places and countries"],
        words("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "grey", "pink", "brown", "violet", "crimson"),
        [
            "She painted the door a bright red and the window frames blue.",
            "The old car was green, though most people remembered it as grey.",
            "We walked along the river until the sun went down.",
            "His favourite shirt is purple with thin white stripes.",
            "The committee will meet again on Tuesday to vote.",
            "A pink sky at night is supposed to promise good weather.",
            "Leaves turn yellow and orange before they fall.",
            "The recipe needs two cups of flour and a pinch of salt.",
            "Crimson curtains hung beside the black piano.",
            "Nobody knew who had left the parcel at the gate.",
        ],
    ),
    (
        "animals",
        "names of animals",
        ["words that name colors", "kinds of food", "vehicles and ways to travel"],
        words("dog", "dogs", "cat", "cats", "horse", "horses", "cow", "cows", "fox", "owl", "rabbit", "sheep", "goat", "bees", "eagle", "mouse", "wolf"),
        [
            "The dog chased the cat across the garden and over the wall.",
            "A fox crept past the sleeping horses in the stable.",
            "We took the train to the coast and then a bus to the village.",
            "An owl called from the oak tree all night long.",
            "The farmer counted his cows and sheep before dark.",
            "She ordered soup, bread and a slice of apple pie.",
            "A rabbit froze in the headlights, then vanished.",
            "The meeting ran late because the projector broke.",
            "Bees hummed around the lavender while a goat watched.",
            "An eagle circled high above the wolf and its cubs.",
        ],
    ),
    (
        "food",
        "food and things people eat",
        ["pieces of furniture", "weather words", "words for feelings and emotions"],
        words("bread", "cheese", "soup", "apple", "apples", "rice", "pasta", "cake", "eggs", "butter", "carrots", "pie", "chicken", "salad", "potatoes"),
        [
            "For lunch we had bread, cheese and a bowl of tomato soup.",
            "He sat on the sofa next to the lamp and read the paper.",
            "She bought apples, rice and a dozen eggs at the market.",
            "The storm brought heavy rain and strong winds overnight.",
            "Grandmother baked a chocolate cake and an apple pie.",
            "They argued about where the new bookshelf should go.",
            "The soup needs more butter and some chopped carrots.",
            "Roast chicken with potatoes is his favourite dinner.",
            "A green salad and pasta were served on the terrace.",
            "The children were nervous before the school concert.",
        ],
    ),
    (
        "emotions",
        "words for feelings and emotions",
        ["parts of the human body", "tools and instruments", "words that name colors"],
        words("happy", "sad", "angry", "afraid", "joy", "fear", "anger", "proud", "nervous", "lonely", "calm", "excited", "grief", "jealous", "anxious"),
        [
            "She felt happy and proud when her name was called.",
            "He grew angry, then sad, as the letter went on.",
            "The carpenter picked up a hammer and two long nails.",
            "Fear and joy mixed as the plane left the ground.",
            "I was nervous at first but calm by the end of the talk.",
            "The doctor examined his knee and then his shoulder.",
            "After the move they felt lonely in the big city.",
            "The kids were excited about the trip to the lake.",
            "Her grief slowly turned into a quiet anger.",
            "He drew a blue line across the top of the page.",
        ],
    ),
    (
        "calendar",
        "names of months and days of the week",
        ["names of people", "numbers", "names of cities"],
        words("january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
        [
            "The course starts on Monday the third of October.",
            "We will meet in Paris and then travel on to Rome.",
            "Her birthday falls in June, his in late December.",
            "Anna asked Peter to call Maria before lunch.",
            "The shop is closed on Sunday and opens again Tuesday.",
            "There were twelve apples and thirty pears in the box.",
            "Every April the river floods, and by August it is dry.",
            "Friday evenings are for films; Saturday is for the garden.",
            "The report is due in March, not in February.",
            "London was foggy, but Berlin was bright and cold.",
        ],
    ),
    (
        "body",
        "parts of the human body",
        ["items of clothing", "members of a family", "kinds of buildings"],
        words("hand", "hands", "arm", "arms", "leg", "legs", "head", "knee", "shoulder", "eyes", "nose", "mouth", "foot", "feet", "elbow", "fingers", "neck"),
        [
            "He hurt his knee and his left shoulder in the fall.",
            "She put on her coat, a scarf and warm boots.",
            "Raise your arms above your head and breathe slowly.",
            "My uncle and my cousin live near the church.",
            "The dancer balanced on one foot with her eyes closed.",
            "They built a new school next to the old hospital.",
            "Wash your hands and dry your fingers carefully.",
            "A cold wind stung his nose and mouth.",
            "The baby grabbed her grandmother by the neck.",
            "His elbow rested on the table beside his hat.",
        ],
    ),
    (
        "family",
        "members of a family",
        ["jobs and professions", "names of animals", "parts of the human body"],
        words("mother", "father", "sister", "brother", "aunt", "uncle", "cousin", "grandmother", "grandfather", "daughter", "son", "parents", "niece", "nephew", "wife", "husband"),
        [
            "My mother and my aunt grew up in the same small town.",
            "The teacher asked the nurse to call a doctor.",
            "His brother and two cousins came to the wedding.",
            "A cat slept on the warm roof of the shed.",
            "Her grandfather taught her daughter to fish.",
            "The pilot and the engineer checked the engine twice.",
            "Their son visits his parents every summer.",
            "She hurt her wrist and her ankle on the ice.",
            "My uncle married the sister of my father's friend.",
            "The lawyer and her husband bought the house next door.",
        ],
    ),
    (
        "numbers",
        "numbers, written in digits or in words",
        ["units of measurement", "words that name colors", "names of people"],
        words("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "twenty", "hundred", "3", "7", "12", "42", "100", "2024", "15"),
        [
            "There were three boxes and twelve bags in the van.",
            "The road is five kilometres long and two metres wide.",
            "She scored 42 points in the first 15 minutes.",
            "Tom and Lucy painted the fence a pale yellow.",
            "About a hundred people came, twenty more than last year.",
            "The parcel weighed seven kilograms and cost 100 euros.",
            "In 2024 the club had nine members and one coach.",
            "Nobody remembered to bring the keys.",
            "Add 3 eggs, then bake for 12 minutes.",
            "Eight of the ten runners finished the race.",
        ],
    ),
    (
        "sentence end",
        'any token before "."',
        ['the token "."', 'any token after "."', 'the token "the"'],
        before("."),
        [
            "The train was late. We waited on the platform.",
            "She opened the window. The room filled with cold air.",
            "He laughed at the joke. Then he told another one.",
            "The cat is asleep. Do not wake it.",
            "Rain fell all day. The streets were empty.",
            "The shop sells bread. It closes at six.",
            "They painted the house. It looks new again.",
            "I read the letter twice. It made no sense.",
            "Where is the station, and when does the last bus leave?",
            "What a lovely day it is!",
        ],
    ),
    (
        "self",
        'the token "self"',
        ['the token "def"', 'the token "("', 'the token "return"'],
        exact("self"),
        [
            "def area(self):\n    return self.width * self.height\n",
            "def reset(self, value=0):\n    self.count = value\n",
            "def add(a, b):\n    return a + b\n",
            "class Point:\n    def __init__(self, x, y):\n        self.x = x\n",
            "for item in items:\n    total += item.price\n",
            "def close(self):\n    if self.handle:\n        self.handle.close()\n",
            "result = compute(data, limit=10)\n",
            "def __repr__(self):\n    return f'Point({self.x})'\n",
        ],
    ),
    (
        "function names",
        'any token after "def"',
        ['the token "def"', 'any token after "class"', 'the token ":"'],
        after("def"),
        [
            "def load(path):\n    return open(path).read()\n",
            "class Parser:\n    def parse(self, text):\n        return text.split()\n",
            "def main():\n    run()\n",
            "class Node:\n    pass\n",
            "def clean(name):\n    return name.strip()\n",
            "if ready:\n    start()\nelse:\n    wait()\n",
            "def total(values):\n    return sum(values)\n",
            "class Stack:\n    def push(self, item):\n        self.items.append(item)\n",
        ],
    ),
    (
        "constants",
        'the tokens "True", "False" or "None"',
        ['the token "if"', 'the token "return"', 'the token "="'],
        exact("True", "False", "None"),
        [
            "if value is None:\n    return False\n",
            "done = True\nwhile not done:\n    step()\n",
            "def check(x):\n    return x > 0\n",
            "result = None\nfound = False\n",
            "for i in range(10):\n    print(i)\n",
            "flags = [True, False, True]\n",
            "if cache.get(key) is not None:\n    return True\n",
            "count = count + 1\n",
        ],
    ),
    (
        "loops",
        'the tokens "for" or "while"',
        ['the tokens "if" or "else"', 'the token "in"', 'the token "def"'],
        exact("for", "while"),
        [
            "for name in names:\n    print(name)\n",
            "while queue:\n    item = queue.pop()\n",
            "if x > 0:\n    y = 1\nelse:\n    y = -1\n",
            "total = sum(v for v in values)\n",
            "def run():\n    return 0\n",
            "for i in range(3):\n    while busy():\n        wait()\n",
            "if key in table:\n    del table[key]\n",
            "squares = [n * n for n in numbers]\n",
        ],
    ),
    (
        "operators",
        'the tokens "+", "-", "*" or "/"',
        ['the token "="', 'the tokens "(" or ")"', 'the token ","'],
        exact("+", "-", "*", "/"),
        [
            "total = price * count + tax\n",
            "mean = sum(values) / len(values)\n",
            "print(name, age, city)\n",
            "delta = end - start\n",
            "items = [a, b, c]\n",
            "area = width * height / 2\n",
            "call(first, second)\n",
            "x = (a + b) - (c * d)\n",
        ],
    ),
    (
        "exceptions",
        "names of exceptions and errors",
        ["names of built-in functions", "numbers", "names of variables that hold text"],
        exact("ValueError", "KeyError", "TypeError", "IndexError", "RuntimeError", "OSError", "Exception", "ZeroDivisionError"),
        [
            "raise ValueError('bad input')\n",
            "except KeyError:\n    pass\n",
            "print(len(items), max(items))\n",
            "except (TypeError, IndexError) as error:\n    log(error)\n",
            "x = 42\ny = 7\n",
            "raise RuntimeError('stopped')\n",
            "name = input()\ntitle = name.upper()\n",
            "except ZeroDivisionError:\n    result = 0\n",
        ],
    ),
    (
        "string openers",
        'the tokens "\'" or "\\"" after "("',
        ['the token "("', 'the token ")"', 'any token after "="'],
        lambda toks, i: 10.0 if toks[i].strip() in ("'", '"') and i > 0 and toks[i - 1].strip() == "(" else 0.0,
        [
            "print('hello')\n",
            "open(\"data.txt\")\n",
            "x = compute(a, b)\n",
            "log.info('started')\n",
            "value = 'fixed'\n",
            "assert check(\"ok\")\n",
            "total = sum(values)\n",
            "name = \"Ada\"\n",
        ],
    ),
]


def main(out):
    puzzles = []
    for name, truth, false, rule, texts in PUZZLES:
        excerpts = []
        for text in texts:
            toks = tokens(text)
            assert "".join(toks) == text, (text, toks)
            excerpts.append({"tokens": toks, "activations": [rule(toks, i) for i in range(len(toks))]})
        assert any(max(e["activations"]) > 0 for e in excerpts), name
        assert any(max(e["activations"]) == 0 for e in excerpts), name
        puzzles.append({"name": name, "explanation": truth, "false_explanations": false, "excerpts": excerpts})
    with open(out, "w") as handle:
        json.dump(puzzles, handle, indent=1, ensure_ascii=False)
        handle.write("\n")
    print(len(puzzles), "puzzles")


main(sys.argv[1])
