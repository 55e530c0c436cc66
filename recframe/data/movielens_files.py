"""MovieLens file layouts, read into one form: ratings plus per-user and per-item attributes.

``detect_layout(path)`` tells the layout from the files present:

- ``100k`` (GroupLens ``ml-100k`` directory): ``u.data`` (``user \\t item \\t rating \\t time``),
  ``u.user`` (``id|age|gender|occupation|zip``), ``u.item`` (``id|title|release date|video
  date|URL|`` 19 genre flags, latin-1); also GroupLens's splits ``u1.base``/``u1.test`` ...
- ``1m`` (``ml-1m`` directory): ``ratings.dat`` (``user::item::rating::time``), ``users.dat``
  (``id::gender::age::occupation::zip``; age and occupation are codes: age 1 = under 18, 18, 25,
  35, 45, 50, 56), ``movies.dat`` (``id::title (year)::Genre|Genre``), latin-1.
- ``latest`` (``ml-latest-small`` / ``ml-latest`` directory): ``ratings.csv``
  (``userId,movieId,rating,timestamp``, half-star ratings), ``movies.csv`` (``movieId,title,genres``);
  there are no user attributes.
- ``joined`` (one CSV file, e.g. DeepCTR's ML-1M sample): header
  ``user_id,movie_id,rating,timestamp,title,genres,gender,age,occupation,zip``.

Years come from the 100K release date or from the ``(1995)`` at the end of a title. A line that
does not parse stops the run naming file, line and field (these files are small and curated: a
bad line means a wrong or damaged copy).

Example:
    >>> detect_layout("data/ml-latest-small")  # doctest: +SKIP
    'latest'
    >>> data = read_movielens("data/ml-latest-small")  # doctest: +SKIP
    >>> len(data.ratings.user), data.has_user_attributes  # doctest: +SKIP
    (100836, False)
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recframe import storage
from recframe.data.report import DataError

LAYOUTS = ("100k", "1m", "latest", "joined")
JOINED_HEADER = ["user_id", "movie_id", "rating", "timestamp", "title", "genres", "gender", "age", "occupation", "zip"]
MAX_GENRES = 20  # a movie's genres are kept up to this many
_YEAR = re.compile(r"\((\d{4})\)\s*$")
_NO_GENRES = "(no genres listed)"


def detect_layout(path: str | Path) -> str:
    """``100k``, ``1m``, ``latest`` or ``joined`` (see the module docstring) of a local path or a URL; DataError
    when none fits."""
    p = storage.location(path)
    if storage.is_dir(p):
        for layout, marker in (("100k", "u.data"), ("1m", "ratings.dat"), ("latest", "ratings.csv")):
            if storage.is_file(storage.join(p, marker)):
                return layout
    elif storage.is_file(p):
        with storage.open_file(p, "rb") as f:
            header = f.readline().decode("utf-8", errors="replace").strip().split(",")
        if header == JOINED_HEADER:
            return "joined"
        raise DataError(f"{p}:1: a MovieLens file must have the header {','.join(JOINED_HEADER)}, got "
                        f"{','.join(header)}")
    where = "" if storage.is_url(str(p)) else f" (from {Path.cwd()})"
    raise DataError(f"{p}: no MovieLens files{where}; give an ml-100k directory (u.data), an ml-1m "
                    "directory (ratings.dat), an ml-latest(-small) directory (ratings.csv, movies.csv) or a joined "
                    f"CSV file with the header {','.join(JOINED_HEADER)}")


@dataclass
class Ratings:
    """Ratings as columns (ids as in the files)."""

    user: np.ndarray  # int64
    item: np.ndarray  # int64
    rating: np.ndarray  # float64 (half stars in ml-latest)
    timestamp: np.ndarray  # int64 (seconds)

    def take(self, rows: np.ndarray) -> Ratings:
        """The ratings at ``rows`` (indices or a mask), in that order."""
        return Ratings(self.user[rows], self.item[rows], self.rating[rows], self.timestamp[rows])

    def __len__(self) -> int:
        return int(self.user.shape[0])


@dataclass
class MovieLensData:
    """Ratings and attributes, indexed by user id / item id (-1 or "" where unknown).

    Args:
        layout: the file layout read.
        ratings: every rating.
        age: per user, the age in years (``100k``) or the age code (``1m``, ``joined``).
        gender: per user, the gender text.
        occupation: per user, the occupation (text or code as text).
        zip_code: per user, the zip code text.
        year: per item, the release year (-1 unknown).
        genres: per item, genre codes ``[items, MAX_GENRES]`` padded with -1.
        titles: per item, its title ("" where unknown).
    """

    layout: str
    ratings: Ratings
    age: np.ndarray | None
    gender: np.ndarray | None
    occupation: np.ndarray | None
    zip_code: np.ndarray | None
    year: np.ndarray
    genres: np.ndarray
    titles: np.ndarray | None = None

    @property
    def has_user_attributes(self) -> bool:
        return self.age is not None


def _lines(path: Path, sep: str, count: int, encoding: str = "utf-8") -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty line; DataError naming file and line when a count differs."""
    out = []
    with path.open(encoding=encoding) as f:
        for number, line in enumerate(f, 1):
            fields = line.rstrip("\r\n").split(sep)
            if fields == [""]:
                continue
            if len(fields) != count:
                raise DataError(f"{path}:{number}: {len(fields)} {sep!r}-separated fields, expected {count}")
            out.append((number, fields))
    return out


def _csv_lines(path: Path, header: list[str]) -> list[tuple[int, list[str]]]:
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        first = next(reader, [])
        if first != header:
            raise DataError(f"{path}:1: header {','.join(first)}, expected {','.join(header)}")
        for row in reader:
            if len(row) != len(header):
                raise DataError(f"{path}:{reader.line_num}: {len(row)} fields, expected {len(header)}")
            out.append((reader.line_num, row))
    return out


def _number(path: Path, line: int, name: str, text: str, kind: type = int) -> int | float:
    try:
        return kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise DataError(f"{path}:{line}: field {name}: {text!r} is not {noun}") from None


def ratings_of(path: Path, lines: list[tuple[int, list[str]]], columns: tuple[int, int, int, int]) -> Ratings:
    """Ratings from parsed lines: ``columns`` gives the field index of user, item, rating and timestamp."""
    u, i, r, t = columns
    user = [_number(path, n, "user", f[u]) for n, f in lines]
    item = [_number(path, n, "item", f[i]) for n, f in lines]
    rating = [_number(path, n, "rating", f[r], float) for n, f in lines]
    time = [_number(path, n, "timestamp", f[t]) for n, f in lines]
    return Ratings(np.array(user, np.int64), np.array(item, np.int64), np.array(rating, np.float64),
                   np.array(time, np.int64))


def read_100k_ratings(path: Path) -> Ratings:
    """The ratings of a ``u.data``-layout file (``u.data``, ``u1.base``, ...)."""
    return ratings_of(path, _lines(path, "\t", 4), (0, 1, 2, 3))


class _Attributes:
    """Per-id attribute arrays grown as ids are seen."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.age = np.full(size, -1, np.int64)
        self.text = {k: np.full(size, "", dtype=object) for k in ("gender", "occupation", "zip_code")}
        self.year = np.full(size, -1, np.int64)
        self.genres = np.full((size, MAX_GENRES), -1, np.int64)
        self.title = np.full(size, "", dtype=object)
        self.genre_codes: dict[str, int] = {}
        self.items = np.zeros(size, bool)  # ids of the movie file

    def set_user(self, path: Path, line: int, user: int, fields: dict[str, str]) -> None:
        """Set ``user``'s age, gender, occupation and zip code from the text ``fields``."""
        self.age[user] = _number(path, line, "age", fields["age"])
        for key in ("gender", "occupation", "zip_code"):
            self.text[key][user] = fields[key]

    def set_genres(self, item: int, names: list[str]) -> None:
        self.items[item] = True
        codes = [self.genre_codes.setdefault(g, len(self.genre_codes)) for g in names if g and g != _NO_GENRES]
        self.genres[item, : min(len(codes), MAX_GENRES)] = codes[:MAX_GENRES]


def _title_year(title: str) -> int:
    found = _YEAR.search(title)
    return int(found.group(1)) if found else -1


def _read_100k(p: Path) -> MovieLensData:
    ratings = read_100k_ratings(p / "u.data")
    users, items = _lines(p / "u.user", "|", 5), _lines(p / "u.item", "|", 24, encoding="latin-1")
    people = _Attributes(max(int(_number(p / "u.user", n, "id", f[0])) for n, f in users) + 1)
    for n, (uid, age, gender, occupation, zip_code) in users:
        u = int(uid)
        people.set_user(p / "u.user", n, u, dict(age=age, gender=gender, occupation=occupation, zip_code=zip_code))
    movies = _Attributes(max(int(_number(p / "u.item", n, "id", f[0])) for n, f in items) + 1)
    for n, fields in items:
        it = int(fields[0])
        movies.items[it] = True
        movies.title[it] = fields[1]
        if fields[2]:
            movies.year[it] = _number(p / "u.item", n, "release date", fields[2].rsplit("-", 1)[-1])
        flags = [_number(p / "u.item", n, "genre", f) for f in fields[5:]]
        movies.genres[it, : sum(1 for f in flags if f)] = [g for g, f in enumerate(flags) if f]
    return _data("100k", ratings, people, movies, p / "u.item", p / "u.user")


def _read_1m(p: Path) -> MovieLensData:
    ratings = ratings_of(p / "ratings.dat", _lines(p / "ratings.dat", "::", 4, "latin-1"), (0, 1, 2, 3))
    users = _lines(p / "users.dat", "::", 5, "latin-1")
    movies_lines = _lines(p / "movies.dat", "::", 3, "latin-1")
    people = _Attributes(max(int(_number(p / "users.dat", n, "id", f[0])) for n, f in users) + 1)
    for n, (uid, gender, age, occupation, zip_code) in users:
        u = int(uid)
        people.set_user(p / "users.dat", n, u, dict(age=age, gender=gender, occupation=occupation, zip_code=zip_code))
    movies = _Attributes(max(int(_number(p / "movies.dat", n, "id", f[0])) for n, f in movies_lines) + 1)
    for _, (mid, title, genres) in movies_lines:
        movies.title[int(mid)] = title
        movies.year[int(mid)] = _title_year(title)
        movies.set_genres(int(mid), genres.split("|"))
    return _data("1m", ratings, people, movies, p / "movies.dat", p / "users.dat")


def _read_latest(p: Path) -> MovieLensData:
    ratings = ratings_of(p / "ratings.csv", _csv_lines(p / "ratings.csv", ["userId", "movieId", "rating", "timestamp"]),
                         (0, 1, 2, 3))
    movie_lines = _csv_lines(p / "movies.csv", ["movieId", "title", "genres"])
    movies = _Attributes(max(int(_number(p / "movies.csv", n, "movieId", f[0])) for n, f in movie_lines) + 1)
    for _, (mid, title, genres) in movie_lines:
        movies.title[int(mid)] = title
        movies.year[int(mid)] = _title_year(title)
        movies.set_genres(int(mid), genres.split("|"))
    return _data("latest", ratings, None, movies, p / "movies.csv", None)


def _read_joined(p: Path) -> MovieLensData:
    lines = _csv_lines(p, JOINED_HEADER)
    ratings = ratings_of(p, lines, (0, 1, 2, 3))
    people = _Attributes(int(ratings.user.max()) + 1)
    movies = _Attributes(int(ratings.item.max()) + 1)
    for n, (uid, mid, _, _, title, genres, gender, age, occupation, zip_code) in lines:
        u, m = int(uid), int(mid)
        people.set_user(p, n, u, dict(age=age, gender=gender, occupation=occupation, zip_code=zip_code))
        movies.title[m] = title
        movies.year[m] = _title_year(title)
        movies.set_genres(m, genres.split("|"))
    return _data("joined", ratings, people, movies, p, p)


def _data(layout: str, ratings: Ratings, people: _Attributes | None, movies: _Attributes, movie_file: Path,
          user_file: Path | None) -> MovieLensData:
    """The data of a layout, once every rating's item is in ``movie_file`` and its user in ``user_file``."""
    known = np.zeros(len(ratings), bool)
    inside = (ratings.item >= 0) & (ratings.item < movies.size)
    known[inside] = movies.items[ratings.item[inside]]
    if not known.all():
        raise DataError(f"{layout} layout: a rating names item {ratings.item[~known][0]}, absent from the movie file "
                        f"{movie_file}: add the movie or remove its ratings")
    if people is not None:
        bad_user = (ratings.user < 0) | (ratings.user >= people.size)
        bad_user |= people.age[np.clip(ratings.user, 0, people.size - 1)] < 0
        if bad_user.any():
            raise DataError(f"{layout} layout: a rating names user {ratings.user[bad_user][0]}, absent from the "
                            f"user file {user_file}: add the user or remove their ratings")
    return MovieLensData(
        layout=layout, ratings=ratings, age=None if people is None else people.age,
        gender=None if people is None else people.text["gender"],
        occupation=None if people is None else people.text["occupation"],
        zip_code=None if people is None else people.text["zip_code"],
        year=movies.year, genres=movies.genres, titles=movies.title,
    )


def read_movielens(path: str | Path) -> MovieLensData:
    """Every rating and attribute of a MovieLens directory or joined file (layout detected).

    Args:
        path: the directory (``100k``, ``1m``, ``latest``) or the joined CSV file.
    """
    p = Path(path)
    layout = detect_layout(p)
    return {"100k": _read_100k, "1m": _read_1m, "latest": _read_latest, "joined": _read_joined}[layout](p)
