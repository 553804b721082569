"""Set a table as LaTeX, Markdown or text: one neutral grid (label columns, data columns with value /
spread / bold / mark) in three formats, so that the three always carry the same cells; the
symbols each format writes (plus-minus, dagger, powers of ten, per cent); and how text from data
(labels, values, names) is escaped for each format (`escape`), so that it shows as written and never
acts: LaTeX's specials and commands (\\input would pull a file into the reader's PDF), a Markdown
cell's pipe, a terminal's control characters. The LaTeX a study file may write itself (its caption
and headers) is a small checked subset (plan.check_latex).
"""
from __future__ import annotations

import re
import textwrap
import unicodedata
from dataclasses import dataclass, field

import metrics as M

TEXT_WIDTH = 120  # the terminal tables' limit

PM = {"latex": "$\\pm$", "text": "±", "md": "±"}
DAGGER = {"latex": "$^\\dagger$", "text": "†", "md": "†"}
DDAGGER = {"latex": "$^\\ddagger$", "text": "‡", "md": "‡"}
TIMES = {"latex": lambda e: f"($\\times 10^{{{e}}}$)", "text": lambda e: f"(×10{_sup(e)})",
         "md": lambda e: f"(×10{_sup(e)})"}
PCT = {"latex": "\\%", "text": "%", "md": "%"}
PM_COLUMNS = "r@{\\extracolsep{0pt}\\,$\\pm$\\,}r"  # mean and std, right-aligned: decimal points line up


# Text from data in LaTeX: ASCII only (the tables need no inputenc or font encoding beyond LaTeX's
# defaults, where most non-ASCII characters stop pdflatex). Specials are escaped; a letter with accents
# becomes LaTeX's accent commands, a Greek letter its math symbol; any other character is named, [U+2603].
LATEX_SPECIALS = {"\\": "\\textbackslash{}", "{": "\\{", "}": "\\}", "$": "\\$", "&": "\\&", "#": "\\#",
                  "%": "\\%", "_": "\\_", "^": "\\textasciicircum{}", "~": "\\textasciitilde{}",
                  "<": "\\textless{}", ">": "\\textgreater{}", "|": "\\textbar{}",
                  "[": "{[}", "]": "{]}", "*": "{*}"}  # [ and * after a row's \\\\ would be read as its options
LATEX_ACCENTS = {"\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0304": "=", "\u0306": "u",
                 "\u0307": ".", "\u0308": '"', "\u030a": "r", "\u030b": "H", "\u030c": "v", "\u0327": "c"}
LATEX_LETTERS = {"ß": "\\ss{}", "æ": "\\ae{}", "Æ": "\\AE{}", "ø": "\\o{}", "Ø": "\\O{}", "œ": "\\oe{}",
                 "Œ": "\\OE{}", "ł": "\\l{}", "Ł": "\\L{}", "ı": "\\i{}", "±": "$\\pm$", "×": "$\\times$",
                 "·": "$\\cdot$", "÷": "$\\div$", "°": "$^\\circ$", "µ": "$\\mu$", "≤": "$\\leq$",
                 "≥": "$\\geq$", "≠": "$\\neq$", "≈": "$\\approx$", "–": "--", "—": "---", "‘": "`", "’": "'",
                 "“": "``", "”": "''", "…": "\\ldots{}", "§": "\\S{}", "¶": "\\P{}", "©": "\\copyright{}",
                 "£": "\\pounds{}", "\u00a0": "~"}
GREEK_CAPITALS = ("Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega")


def latex_text(text: str) -> str:
    """`text` as LaTeX that typesets it as written (see LATEX_SPECIALS); control characters as their escapes."""
    text = M.printable(str(text))
    return "".join("-{}" if c == "-" and text[i + 1:i + 2] == "-" else _latex_char(c)  # -- would be a dash
                   for i, c in enumerate(text))


def _latex_char(c: str) -> str:
    if c in LATEX_SPECIALS:
        return LATEX_SPECIALS[c]
    if " " <= c <= "~":
        return c
    if c in LATEX_LETTERS:
        return LATEX_LETTERS[c]
    base, *marks = unicodedata.normalize("NFD", c)
    if marks and base.isascii() and base.isalpha() and all(m in LATEX_ACCENTS for m in marks):
        for m in marks:
            base = f"\\{LATEX_ACCENTS[m]}{{{base}}}"
        return base
    name = unicodedata.name(c, "").split()
    if name[:1] == ["GREEK"] and name[2:3] == ["LETTER"] and len(name) == 4:
        letter = name[3].capitalize() if name[1] == "CAPITAL" else name[3].lower()
        if name[1] == "SMALL" or letter in GREEK_CAPITALS:
            return f"$\\{letter.replace('lamda', 'lambda')}$"
    return f"[U+{ord(c):04X}]"


# What a Markdown cell must escape: its pipe ends the cell; the others would start code, emphasis, links or
# HTML (a notebook renders HTML in Markdown), the backslash so that every escape reads back.
MARKDOWN_SPECIALS = re.compile(r"([\\|`*<>\[\]$])")


def markdown_text(text: str) -> str:
    """`text` as a Markdown table cell that shows it as written: on one line, specials backslash-escaped."""
    return MARKDOWN_SPECIALS.sub(r"\\\1", M.printable(str(text)))


ESCAPES = {"latex": latex_text, "md": markdown_text, "text": lambda text: M.printable(str(text))}


def escape(text, fmt: str) -> str:
    """Text from data (a label, a value, a name) as format `fmt` ("latex", "md", "text") shows it as written."""
    return ESCAPES[fmt](text)


def plain(tex: str) -> str:
    """A caption or header written in LaTeX as plain text (Markdown and the terminal)."""
    return tex.replace("$", "").replace("\\tau", "τ").replace("N_k^{(0)}", "N0").replace("\\", "")


def _sup(e: int) -> str:
    return str(e).translate(str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻"))


@dataclass
class Grid:
    labels: list[str]  # headers of the label columns
    heads: list[tuple[str, str]]  # per data column: (spanning header, sub-header)
    rows: list[list[str]]  # label cells per row ("" repeats the row above)
    cells: list[list[tuple[str, str, bool, str]]]  # (value, spread or "", bold, mark) per data column
    breaks: list[int]  # rows after which a new group starts
    pm: list[bool]  # per data column: has a value +- spread pair
    sections: dict = field(default_factory=dict)  # row index -> a label row set before it


# A label longer than WRAP characters (an arm's name such as "lucidrains k-means + dead codes") is set
# in a paragraph column of WRAP_WIDTH, ragged right, so that the table still fits the column.
WRAP, WRAP_WIDTH = 14, "7em"
SECTION_WRAP = 40  # a section row longer than this many characters wraps within the column


def as_latex(grid: Grid, caption: str, label: str) -> str:
    # tabular* spreads the room left in the column between the columns (at least 2 x 1.5 pt each), but
    # never between a mean and its std: the "+-" separator switches the stretch off, the next one back on.
    wrap = [max((len(str(row[j])) for row in grid.rows), default=0) > WRAP for j in range(len(grid.labels))]
    spec = "@{\\extracolsep{\\fill}}" + "".join(f"p{{{WRAP_WIDTH}}}" if w else "l" for w in wrap)
    for k, pm in enumerate(grid.pm):
        spec += PM_COLUMNS if pm else "r"
        if pm and k + 1 < len(grid.pm):
            spec += "@{\\extracolsep{\\fill}\\hspace{2\\tabcolsep}}"
    width = [2 if pm else 1 for pm in grid.pm]
    top, cmid, sub = [""] * len(grid.labels), [], list(grid.labels)
    col = len(grid.labels) + 1
    for i, j in _spans(grid.heads):
        span = sum(width[i:j + 1])
        top.append(f"\\multicolumn{{{span}}}{{c}}{{{grid.heads[i][0]}}}" if span > 1 else grid.heads[i][0])
        if grid.heads[i][1]:
            cmid.append(f"\\cmidrule(lr){{{col}-{col + span - 1}}}")
        sub += [f"\\multicolumn{{{width[k]}}}{{c}}{{{grid.heads[k][1]}}}" if width[k] > 1 else grid.heads[k][1]
                for k in range(i, j + 1)]
        col += span
    lines = ["\\begin{table}[tbp]", "\\footnotesize", "\\setlength{\\tabcolsep}{1.5pt}",
             f"\\caption{{{caption}}}", f"\\label{{{label}}}",
             f"\\begin{{tabular*}}{{\\columnwidth}}{{{spec}}}", "\\toprule"]
    if any(h[1] for h in grid.heads):  # spanning headers over sub-headers
        lines += [" & ".join(top) + " \\\\", " ".join(cmid), " & ".join(sub) + " \\\\", "\\midrule"]
    else:
        lines += [" & ".join(grid.labels + [h[0] for h in grid.heads]) + " \\\\", "\\midrule"]
    ncols = len(grid.labels) + sum(width)
    for i, (labels, cells) in enumerate(zip(grid.rows, grid.cells)):
        if i in grid.breaks or (i in grid.sections and i > 0):
            lines.append("\\addlinespace")
        if i in grid.sections:
            column = "l" if len(plain(grid.sections[i])) <= SECTION_WRAP else "@{}p{0.95\\columnwidth}@{}"
            lines.append(f"\\multicolumn{{{ncols}}}{{{column}}}{{\\emph{{{grid.sections[i]}}}}} \\\\")
        parts = [f"\\raggedright {text}" if w and text else text for text, w in zip(labels, wrap)]
        for (value, spread, bold, mark), pm in zip(cells, grid.pm):
            value, spread = _minus(value), _minus(spread)
            b = (lambda s: f"\\textbf{{{s}}}") if bold else (lambda s: s)
            if pm and spread:
                parts += [b(value), b(spread) + mark]
            elif pm:  # no spread (n = 1 or nothing to average): value where the means are, no +-
                parts += [f"\\multicolumn{{1}}{{r@{{}}}}{{{b(value)}}}", f"\\multicolumn{{1}}{{l}}{{{mark}}}"]
            else:
                parts.append(b(value) + mark)
        lines.append(" & ".join(parts) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular*}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _minus(text: str) -> str:
    """A number's minus sign as LaTeX's minus, not a hyphen (also inside "[-1.0, -0.5]")."""
    return re.sub(r"(?<![\w.])-(?=\d)", "$-$", text)


def _plain_cells(grid: Grid, fmt: str) -> list[list[str]]:
    out = []
    for labels, cells in zip(grid.rows, grid.cells):
        row = list(labels)
        for value, spread, bold, mark in cells:
            text = f"{value} {PM[fmt]} {spread}" if spread else value
            row.append((f"**{text}**{mark}" if fmt == "md" else f"{text}{mark} *") if bold else text + mark)
        out.append(row)
    return out


def _head_text(head: tuple[str, str]) -> str:
    return " ".join(h for h in head if h)


def as_markdown(grid: Grid, caption: str) -> str:
    header = grid.labels + [_head_text(h) for h in grid.heads]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" * len(grid.labels) + "---:|" * len(grid.heads)]
    for i, row in enumerate(_plain_cells(grid, "md")):
        if i in grid.sections:
            lines.append(f"| *{grid.sections[i]}* |" + " |" * (len(grid.labels) - 1 + len(grid.heads)))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n\n" + caption


def _spans(heads: list[tuple[str, str]]) -> list[tuple[int, int]]:
    """(first, last) data columns sharing a spanning header (equal and with sub-headers)."""
    spans, i = [], 0
    while i < len(heads):
        j = i
        while j + 1 < len(heads) and heads[i][1] and heads[j + 1][0] == heads[i][0]:
            j += 1
        spans.append((i, j))
        i = j + 1
    return spans


def as_text(grid: Grid, note: str) -> str:
    nl = len(grid.labels)
    body = _plain_cells(grid, "text")
    sub = grid.labels + [h[1] for h in grid.heads]
    widths = [max(len(r[i]) for r in [sub] + body) for i in range(len(sub))]
    spans = _spans(grid.heads)
    for i, j in spans:  # a spanning header wider than its columns widens the last of them
        inner = sum(widths[nl + i:nl + j + 1]) + 2 * (j - i)
        widths[nl + j] += max(0, len(grid.heads[i][0]) - inner)
    top = [" " * w for w in widths[:nl]] + [grid.heads[i][0].rjust(sum(widths[nl + i:nl + j + 1]) + 2 * (j - i))
                                            for i, j in spans]
    fmt_row = lambda r: "  ".join(c.ljust(w) if i < nl else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    lines = (["  ".join(top).rstrip()] if any(h[1] for h in grid.heads) else []) + [
        fmt_row(sub if any(h[1] for h in grid.heads) else grid.labels + [h[0] for h in grid.heads])]
    for i, r in enumerate(body):
        if i in grid.breaks or (i in grid.sections and i > 0):
            lines.append("")
        if i in grid.sections:
            lines.append(grid.sections[i])
        lines.append(fmt_row(r))
    return "\n".join(lines) + "\n" + textwrap.fill(note, TEXT_WIDTH)
