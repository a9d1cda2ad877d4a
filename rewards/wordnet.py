"""Offline WordNet 3.0 for nltk's METEOR, built from Debian's packages.

METEOR (``nltk.translate.meteor_score``) matches synonyms through WordNet, which nltk normally
downloads. Offline, Debian's ``wordnet-base`` and ``wordnet-sense-index`` packages ship the
WordNet 3.0 database files in ``/usr/share/wordnet``; nltk reads them once they are *copied* (nltk's
corpus reader resolves paths inside its data folder, so symlinks out of it are not followed
reliably) into ``<nltk_data>/corpora/wordnet/`` together with ``lexnames``, the one file Debian
does not ship. ``lexnames`` is the fixed table of WordNet 3.0's 45 lexicographer files (see
``lexnames(5WN)``); it is written here and checked against the data files.

Set-up (what CI runs)::

    apt-get update && apt-get install -y wordnet-base wordnet-sense-index
    python -m textgym.rewards.wordnet            # into $NLTK_DATA, else ~/nltk_data
    python -m textgym.rewards.wordnet --check    # exit 1 unless nltk reads it

``scripts/setup_wordnet.sh`` runs those steps.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

DEBIAN_WORDNET = Path("/usr/share/wordnet")
SETUP_HINT = (
    "apt-get install -y wordnet-base wordnet-sense-index && "
    "python -m textgym.rewards.wordnet   (or: bash scripts/setup_wordnet.sh)"
)

# WordNet 3.0 lexicographer files, in file-number order, with their syntactic category
# (1 noun, 2 verb, 3 adjective, 4 adverb), as listed in lexnames(5WN).
LEXNAMES: tuple[tuple[str, int], ...] = (
    ("adj.all", 3),
    ("adj.pert", 3),
    ("adv.all", 4),
    ("noun.Tops", 1),
    ("noun.act", 1),
    ("noun.animal", 1),
    ("noun.artifact", 1),
    ("noun.attribute", 1),
    ("noun.body", 1),
    ("noun.cognition", 1),
    ("noun.communication", 1),
    ("noun.event", 1),
    ("noun.feeling", 1),
    ("noun.food", 1),
    ("noun.group", 1),
    ("noun.location", 1),
    ("noun.motive", 1),
    ("noun.object", 1),
    ("noun.person", 1),
    ("noun.phenomenon", 1),
    ("noun.plant", 1),
    ("noun.possession", 1),
    ("noun.process", 1),
    ("noun.quantity", 1),
    ("noun.relation", 1),
    ("noun.shape", 1),
    ("noun.state", 1),
    ("noun.substance", 1),
    ("noun.time", 1),
    ("verb.body", 2),
    ("verb.change", 2),
    ("verb.cognition", 2),
    ("verb.communication", 2),
    ("verb.competition", 2),
    ("verb.consumption", 2),
    ("verb.contact", 2),
    ("verb.creation", 2),
    ("verb.emotion", 2),
    ("verb.motion", 2),
    ("verb.perception", 2),
    ("verb.possession", 2),
    ("verb.social", 2),
    ("verb.stative", 2),
    ("verb.weather", 2),
    ("adj.ppl", 3),
)

# The files nltk's WordNetCorpusReader opens (its _FILES), less lexnames which we write.
DEBIAN_FILES: tuple[str, ...] = (
    "cntlist.rev",
    "index.sense",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
)
_POS_OF_DATA = {"data.noun": 1, "data.verb": 2, "data.adj": 3, "data.adv": 4}


def default_target() -> Path:
    """The nltk data folder to install into: ``$NLTK_DATA`` (first entry) or ``~/nltk_data``."""
    env = os.environ.get("NLTK_DATA")
    if env:
        return Path(env.split(os.pathsep)[0])
    return Path.home() / "nltk_data"


def lexnames_text() -> str:
    """The ``lexnames`` file: ``NN<TAB>name<TAB>category`` per line, as WordNet 3.0 ships it."""
    return "".join(f"{i:02d}\t{name}\t{cat}\n" for i, (name, cat) in enumerate(LEXNAMES))


def check_lexnames(wordnet_dir: Path) -> None:
    """Raise unless every synset's lexicographer file number fits its data file's category.

    A data line is ``offset lex_filenum ss_type ...``; licence header lines start with spaces.
    """
    for fname, cat in _POS_OF_DATA.items():
        with open(wordnet_dir / fname, encoding="utf-8", errors="replace") as fp:
            for line in fp:
                if line.startswith(" "):
                    continue
                lex = int(line.split(" ", 2)[1])
                if lex >= len(LEXNAMES) or LEXNAMES[lex][1] != cat:
                    raise RuntimeError(
                        f"{fname}: synset {line[:8]} has lexicographer file {lex}, which does not "
                        f"fit category {cat}; is {wordnet_dir} WordNet 3.0?"
                    )


def install(source: Path = DEBIAN_WORDNET, target: Path | None = None) -> Path:
    """Copy WordNet 3.0 from ``source`` into ``<target>/corpora/wordnet`` and write lexnames.

    Args:
        source: folder with the WordNet database files (Debian: ``/usr/share/wordnet``).
        target: an nltk data folder; default ``default_target()``.

    Returns:
        The ``corpora/wordnet`` folder written.
    """
    missing = [f for f in DEBIAN_FILES if not (source / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"WordNet files {missing} are missing from {source}; install them with: "
            "apt-get install -y wordnet-base wordnet-sense-index"
        )
    dest = (target or default_target()) / "corpora" / "wordnet"
    dest.mkdir(parents=True, exist_ok=True)
    for f in DEBIAN_FILES:
        # copyfile follows a symlinked source and writes a real file, which nltk needs.
        shutil.copyfile(source / f, dest / f)
    (dest / "lexnames").write_text(lexnames_text(), encoding="utf-8")
    check_lexnames(dest)
    return dest


def is_available() -> bool:
    """Whether nltk can load WordNet (without downloading)."""
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return bool(wordnet.synsets("dog"))
    except LookupError:
        return False


def require() -> None:
    """Raise ``LookupError`` naming the set-up command when WordNet is not installed for nltk."""
    if not is_available():
        raise LookupError(
            "METEOR needs WordNet 3.0 for nltk, which is not installed. Offline set-up: "
            + SETUP_HINT
        )


def main(argv: list[str] | None = None) -> int:
    """Command line: install (default) or ``--check``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=DEBIAN_WORDNET)
    parser.add_argument("--target", type=Path, default=None, help="nltk data folder")
    parser.add_argument("--check", action="store_true", help="only check that nltk reads it")
    args = parser.parse_args(argv)
    if not args.check:
        dest = install(args.source, args.target)
        print(f"WordNet 3.0 installed in {dest}")  # noqa: T201  (a command-line tool)
        if args.target is not None:
            import nltk

            nltk.data.path.insert(0, str(args.target))
    ok = is_available()
    print("nltk reads WordNet: " + ("yes" if ok else "NO"))  # noqa: T201
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
