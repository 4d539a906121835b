"""The English patterns explain.prose reads explanations with, one table per kind of cue.

Each is a regular expression over the lower-cased explanation (quoted words already held out
as qqN); the CONDITIONS tables pair a pattern with the factor it adds: where a token must
stand for the explanation to predict it fires. General English only: no pattern or word here
was taken from a puzzle.
"""

from __future__ import annotations

import re

from sparsecircuits.explain import arithmetic, code_cues, cues
from sparsecircuits.explain.vocabulary import FUNCTION_WORDS, word_set
from sparsecircuits.explain.wordclasses import Factor

END = r"(?=[,;()]|\band\b|\bor\b|\bbut\b|\bwhen\b|\bwhere\b|\bthat\b|\bwhich\b|$)"

ENCLOSED = (
    r"(?:between|inside|within|in|enclosed (?:in|by)|surrounded by|wrapped in"
    r"|(?:the )?contents? of)\s+"
    r"(?:an? |the |matching )?(?:pairs? of )?"
)

LINE = r"(?:a |the |each |every |its )?(?:new |same )?lines?"

SENTENCE = r"(?:a |the |each |every |its )?sentences?"

SKIP_INDENT = (
    r"(?:\s*[(,]?\s*(?:after|ignoring|past|skipping|not counting) (?:any |the )?"
    r"(?:leading )?(?:indentation|whitespace|spaces)\s*\)?)?"
)

# What an explanation sets aside ("ignoring case", "other than X") is not a target.
EXCLUDED = (
    r"\b(?:ignoring|not counting|excluding|except(?: for)?|other than|apart from|besides)\b"
    r"[^,;()]*"
)

# (pattern, what it adds): conditions on where a token stands.
CONDITIONS: list[tuple[str, Factor]] = [
    (ENCLOSED + r"square brackets?", lambda t: cues.inside_brackets(t, "[")),
    (ENCLOSED + r"(?:parenthes[ie]s|round brackets?)", lambda t: cues.inside_brackets(t, "(")),
    (ENCLOSED + r"(?:curly )?braces", lambda t: cues.inside_brackets(t, "{")),
    (ENCLOSED + r"(?:double |single )?(?:quotes|quotation marks|quote marks)",
     cues.inside_quotes),
    (r"(?:python |code )?string literals?|strings? literals?|quoted (?:text|strings?|words?)"
     r"|(?:python |code )?strings?", cues.inside_quotes),
    (r"(?:in |inside |within )?(?:an? |the )?(?:python |code |line )?comments?",
     cues.inside_comment),
    (r"(?:first|initial|opening|leading) (?:words?|tokens?|things?)(?: that appears?)? (?:on|of|in|"
     r"at the (?:start|beginning) of) " + LINE + SKIP_INDENT
     + r"|(?:the )?(?:start|beginning) of " + LINE + SKIP_INDENT
     + r"|(?:begins?|starts?|opens?) " + LINE + SKIP_INDENT, cues.line_starts),
    (r"(?:last|final) (?:words?|tokens?|things?) (?:on|of|in|at the end of) " + LINE
     + r"|(?:the )?end of " + LINE + r"|(?:ends?|finish(?:es)?|closes?) " + LINE,
     cues.line_ends),
    (r"(?:first|opening) words? (?:of|in) " + SENTENCE + r"|(?:the )?(?:start|beginning) of "
     + SENTENCE + r"|(?:begins?|starts?|opens?) " + SENTENCE, cues.sentence_starts),
    (r"(?:last|final) words? (?:of|in|before the end of) " + SENTENCE + r"|(?:the )?end of "
     + SENTENCE + r"|(?:ends?|finish(?:es)?|closes?) " + SENTENCE, cues.sentence_ends),
    (r"(?:first|initial) (?:tokens?|words?) (?:of|in) (?:the |a |each )?(?:text|excerpt|passage"
     r"|document|sequence|input|context)|(?:the )?(?:start|beginning) of (?:the |a )?(?:text"
     r"|excerpt|passage|document|sequence)", cues.first_token),
    (r"(?:wrong|incorrect|false|mistaken|erroneous|bad|inaccurate|untrue) (?:answers?|results?"
     r"|sums?|totals?|calculations?|arithmetic|math|equations?|claims?)(?: (?:to|of|in|for) "
     r"(?:an? |the )?(?:simple |basic )?(?:arithmetic|sums?|math|calculations?|equations?"
     r"|problems?))?", lambda t: arithmetic.arithmetic(t, False)),
    (r"(?:correct|right|true) (?:answers?|results?|sums?|totals?)(?: (?:to|of|in|for) "
     r"(?:an? |the )?(?:simple |basic )?(?:arithmetic|sums?|math|calculations?|equations?))?",
     lambda t: arithmetic.arithmetic(t, True)),
    (r"(?:answers?|results?|outcomes?|totals?) (?:to|of|in) (?:an? |the )?(?:simple |basic )?"
     r"(?:arithmetic(?: sums?| problems?| operations?)?|sums?|calculations?|equations?"
     r"|additions?|subtractions?|multiplications?)", lambda t: arithmetic.arithmetic(t, None)),
    (r"(?:being|that are|that is|getting) assigned(?: to)?|assigned to|assignment targets?"
     r"|(?:on|to) the left of (?:an? |the )?(?:equals sign|=|assignment)", code_cues.assigned),
    (r"(?:on |in )?indented (?:lines?|code|blocks?)|(?:inside|in|within) (?:the |a )?body of "
     r"(?:an? |the )?(?:function|loop|class|block)|(?:inside|in|within) (?:an? |the )?"
     r"(?:function|loop) bod(?:y|ies)", code_cues.indented_lines),
    (r"arguments? (?:to|of|in|passed to) (?:an? |the )?(?:function|method)(?: calls?)?"
     r"|function(?: call)? arguments?|call arguments?", code_cues.call_arguments),
]  # fmt: skip

# Read before the general patterns, which would claim a part of them ("string", "repeats").
EARLY_CONDITIONS: list[tuple[str, Factor]] = [
    (r"repeats? the (?:word|token) (?:just |right |immediately )?before it|(?:the )?same "
     r"(?:word|token) as the (?:one |word |token )?(?:just |right )?before(?: it)?"
     r"|(?:repeated )?twice in a row|doubled words?", cues.same_as_previous),
    (r"keyword arguments?|named arguments?", code_cues.keyword_arguments),
    (r"(?:in|inside|within) (?:an? |the )?(?:function |method )?calls?\b",
     code_cues.call_arguments),
    (r"(?:the )?opening quot(?:e|es|ation marks?)(?: marks?)?(?: (?:of|that opens?|starting) "
     r"(?:an? |the )?strings?)?", lambda t: cues.quote_marks(t, opening=True)),
    (r"(?:the )?closing quot(?:e|es|ation marks?)(?: marks?)?(?: (?:of|that closes?|ending) "
     r"(?:an? |the )?strings?)?", lambda t: cues.quote_marks(t, opening=False)),
]  # fmt: skip

FIRST_TIME = (
    r"first (?:time|occurrence|copy|mention|appearance|instance|use)|(?:appears?|occurs?|used"
    r"|mentioned|seen) for the first time"
)

REPEATED = (
    r"\bagain\b|\brepeat(?:s|ed|ing)?\b|\brepetitions?\b|\bsecond (?:time|copy|occurrence"
    r"|mention|appearance|instance|use)|\balready(?: (?:appeared|seen|used|mentioned|occurred"
    r"|been \w+))?|(?:appeared|seen|used|mentioned|occurred|shown|written) (?:earlier|before"
    r"|previously)|\bearlier in (?:the |a )?(?:text|passage|excerpt|document|sentence|code)"
    r"|\bpreviously\b|\bre-?used\b|\bduplicat(?:e|ed|es)\b|\bcopied\b|\bcopy of\b"
)

# "... used again after it was defined": the "after" is about time, not a token.
TIME_CLAUSE = (
    r"(?:after|once|since|when) (?:it|they|the \w+) (?:was|were|has been|have been|is|are"
    r"|had been) (?:first )?(?:defined|assigned|introduced|declared|created|mentioned|used"
    r"|seen|set|written)"
)

PHRASES = r"\b(?:phrases?|sequences?|n-?grams?|spans?|runs? of|several words|multiple words)\b"

NEXT_SUBJECT = re.compile(
    r"(?:^|(?<=[,;(]))([^,;()]*?)\b(?:is|are) (?:likely|expected|about|predicted|probably "
    r"going|going|very likely) to (?:come|follow|appear|be) (?:next|after it)\b"
    r"|(?:^|(?<=[,;(]))([^,;()]*?)\b(?:comes?|follows?|appears?) next\b"
)

NEXT_OBJECT = re.compile(
    r"\b(?:the next (?:token|word) (?:is|will be|should be) (?:likely )?(?:to be )?"
    r"|predicts? (?:that )?(?:the next (?:token|word) (?:is|will be) )?"
    r"|(?:right |just |immediately |directly )?(?:before|preceding|ahead of) "
    r"|(?:is |are )?followed by |\bprecedes? )(.+?)" + END
)

PREVIOUS_OBJECT = re.compile(
    r"\b(right |just |immediately |directly )?(?:after|following|preceded by|that follows?"
    r"|comes? after) (.+?)" + END
)

NEIGHBOUR_OBJECT = re.compile(
    r"\b(?:separated by|next to|adjacent to|beside|between two) (.+?)" + END
)

DOMAIN = [
    (
        r"\bin (?:python |source )?code\b|\bin (?:an? |the )?(?:python )?programs?\b"
        r"|\bin python\b|\bof (?:python )?code\b",
        True,
    ),
    (r"\bin (?:english|prose|natural language|ordinary text|plain text)\b", False),
]

MEANING_ONLY = re.compile(
    r"\b(?:about|related to|relating to|associated with|to do with|concerning|on the "
    r"(?:topic|subject) of)\b(.*)$"
)

EXAMPLES = re.compile(
    r"\b(?:like|such as|e\.g\.,?|for example,?|for instance,?|including|especially)\s+"
    r"(.+?)(?=[);]|$)"
)

SENSE = re.compile(
    r"\b(?:meaning|in the sense of|used to mean|in the meaning of|as in|referring to|used as"
    r"|as an?|when it means)"
    r"\s+(.+?)(?=,|;|\bnot\b|$)"
)

IN_THE_SENSE = re.compile(r"\bin (?:the|its) ([a-z][a-z -]*?) (?:sense|meaning)\b")

NOT_SENSE = re.compile(r"\bnot\s+(?:as |in the sense of |meaning )?(.+?)(?=,|;|$)")

ANY_SENSE = re.compile(r"\bin (?:any|every|all|each) (?:of its )?(?:senses?|meanings?|uses?)\b")

UNQUOTED_WORD = re.compile(r"\bthe (?:word|token|name|string)s? ([a-z][a-z-]*)\b")

NOT_A_LITERAL = FUNCTION_WORDS | word_set(
    "right just immediately directly itself being likely following preceding"
)

AFFIX = re.compile(
    r"\b(?:end|ends|ending|that end|which end|finish|finishing)\s+(?:in|with)\s+(?:the letters?"
    r"\s+|the suffix\s+|an?\s+)?-?(?!(?:an?|the)\b)(qq\d+|[a-z]{1,4})\b"
    r"|\b(?:start|starts|starting|begin|begins|beginning)\s+with\s+(?:the letters?\s+"
    r"|the prefix\s+|an?\s+)?(?!(?:an?|the)\b)(qq\d+|[a-z]{1,3})-?(?!\w)"
)

PAIR_NAMES = {"[": "square brackets", "(": "parentheses", "{": "braces"}
