"""Tables of categorical columns made from the repository's data samples, for ``+experiment=tabular``.

Writes, under ``--out`` (the samples stay where they are; nothing here is committed):

- ``criteo_cat/``: the Criteo Kaggle sample (10,000 rows) with its 13 dense columns dropped: ``label`` and
  ``C1..C26`` (hexadecimal), the first 8,000 rows as ``train.csv``, the last 2,000 as ``val.csv``, and
  ``spec.yaml`` (26 categorical features, vocabularies of the training rows).
- ``movielens_cat/``: MovieLens 100K as a click table (rating >= 4): user id, age, gender, occupation, zip
  prefix, item id, release year and genres (multi-hot), all categorical; GroupLens's ``u1`` split:
  ``train.csv`` (u1.base, 80,000 ratings) and ``val.csv`` (u1.test, 20,000), and ``spec.yaml``.

Then, for example::

    recframe train +experiment=tabular data.path=tables/criteo_cat/train.csv data.val_path=tables/criteo_cat/val.csv \
        data.spec=tables/criteo_cat/spec.yaml model=deepfm

Example:
    $ python scripts/shared_tables.py --data ../shared/data --out tables
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

CRITEO_SPEC = """# The Criteo Kaggle sample without its dense columns: 26 hexadecimal categorical columns.
label: label
categorical:
{columns}
"""
MOVIELENS_SPEC = """# MovieLens 100K as a table of categorical columns: a click is a rating >= 4.
label: rating
positive_threshold: 4
categorical:
  user_id: {dtype: int, mapping: vocab, rows: 1000}
  user_age: {mapping: vocab, rows: 100}
  user_gender: {mapping: vocab, rows: 4}
  user_occupation: {mapping: vocab, rows: 32}
  user_zip: {mapping: vocab, rows: 1000}
  item_id: {dtype: int, mapping: vocab, rows: 2000}
  item_year: {mapping: vocab, rows: 100}
  item_genres: {separator: "|", mapping: vocab, rows: 32}
"""


def criteo_table(data: Path, out: Path, train_rows: int = 8000) -> None:
    """The Kaggle sample's label and C1..C26 as train.csv / val.csv, with spec.yaml."""
    lines = (data / "criteo_kaggle_dac_sample" / "train_examples.txt").read_text().splitlines()
    out.mkdir(parents=True, exist_ok=True)
    header = ["label", *(f"C{i}" for i in range(1, 27))]
    for name, part in (("train", lines[:train_rows]), ("val", lines[train_rows:])):
        with open(out / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for line in part:
                fields = line.split("\t")
                writer.writerow([fields[0], *fields[14:40]])
    columns = "\n".join(f"  C{i}: {{dtype: hex, mapping: vocab, rows: 2000}}" for i in range(1, 27))
    (out / "spec.yaml").write_text(CRITEO_SPEC.format(columns=columns))


def movielens_table(data: Path, out: Path) -> None:
    """ml-100k's u1.base / u1.test joined with the user and item attributes, as train.csv / val.csv."""
    folder = data / "movielens_100k"
    users = {f[0]: f[1:] for f in (line.split("|") for line in (folder / "u.user").read_text().splitlines())}
    genre_names = [line.split("|")[0] for line in (folder / "u.genre").read_text().splitlines() if line]
    items = {}
    for line in (folder / "u.item").read_text(encoding="latin-1").splitlines():
        f = line.split("|")
        genres = "|".join(name for name, flag in zip(genre_names, f[5:], strict=False) if flag == "1")
        items[f[0]] = (f[2][-4:], genres)
    out.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", "u1.base"), ("val", "u1.test")):
        with open(out / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["rating", "user_id", "user_age", "user_gender", "user_occupation", "user_zip", "item_id",
                             "item_year", "item_genres"])
            for line in (folder / split).read_text().splitlines():
                user, item, rating, _ = line.split("\t")
                age, gender, occupation, zip_code = users[user]
                writer.writerow([rating, user, age, gender, occupation, zip_code[:3], item, *items[item]])
    (out / "spec.yaml").write_text(MOVIELENS_SPEC)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                   help="the samples folder (default: ../shared/data next to the repository)")
    p.add_argument("--out", type=Path, required=True, help="where the tables go")
    args = p.parse_args()
    criteo_table(args.data, args.out / "criteo_cat")
    movielens_table(args.data, args.out / "movielens_cat")
    print(f"wrote {args.out / 'criteo_cat'} and {args.out / 'movielens_cat'}")


if __name__ == "__main__":
    main()
