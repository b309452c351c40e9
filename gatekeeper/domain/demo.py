"""The demo dataset: generated X API v2 response pages, as twarc2 writes them, in many languages.

`gatekeeper serve --demo` registers it so that a fresh install has something realistic to
filter, share and export: 19-digit snowflake IDs that decode to their ``created_at``, authors
from a pool of users with the fields X returns, text in fifteen languages and their scripts, and
the awkward cases exports must survive (formula-like text, newlines, control characters, emoji).
Nothing here is real content: every name and sentence is made up.

Somewhat over ~400 lines: the generator and its loader are one fixture, read together.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing as mp
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from gatekeeper.domain.demostory import Loaded
    from gatekeeper.domain.gate import Gate

DEMO_DATASET = "demo"
PAGE_SIZE = 100  # twarc2 asks for 100 posts per page
USER_POOL = 5_000
SPAN = timedelta(days=60)
TWITTER_EPOCH_MS = 1_288_834_974_657  # snowflake IDs count milliseconds from here
VERSION = "2.14.0"  # the twarc version the __twarc metadata claims

# lang -> (weight, sentence templates, topics, hashtags, first names, last names, places).
# Templates take {t} (a topic) and {n} (a small number); each sentence is in its language.
LANGS: dict[str, tuple[int, list[str], list[str], list[str], list[str], list[str], list[str]]] = {
    "en": (30, ["Can't stop thinking about {t} today", "Anyone else following {t}? This is wild",
                "Hot take: {t} is overrated", "{n} hours of {t} and I regret nothing",
                "Just finished reading about {t}. Thread below", "Why is nobody talking about {t}"],
           ["the new album", "the election", "climate policy", "the match last night",
            "remote work", "the product launch", "coffee prices", "the season finale"],
           ["news", "music", "tech", "football", "climate"], ["James", "Emma", "Olivia", "Noah"],
           ["Smith", "Brown", "Taylor", "Walker"], ["London", "New York", "Sydney", "Toronto"]),
    "ja": (12, ["今日は{t}のことばかり考えてる", "{t}、本当に最高だった！", "{n}時間ずっと{t}",
                "誰か{t}について教えてください", "やっと{t}が見られた"],
           ["新しいアルバム", "昨日の試合", "桜の季節", "ラーメン", "新作ゲーム", "選挙"],
           ["東京", "音楽", "ゲーム", "桜"], ["さくら", "陽菜", "蓮", "大翔"],
           ["佐藤", "鈴木", "高橋", "田中"], ["東京", "大阪", "札幌", "福岡"]),
    "es": (9, ["No puedo dejar de pensar en {t}", "¿Alguien más está siguiendo {t}?",
               "{n} horas hablando de {t} y seguimos", "Opinión impopular: {t} está sobrevalorado",
               "Hoy toca hablar de {t}"],
           ["el partido de anoche", "las elecciones", "el nuevo disco", "el calor",
            "la serie nueva", "el precio del café"],
           ["fútbol", "música", "noticias", "cine"], ["Lucía", "Mateo", "Sofía", "Santiago"],
           ["García", "Martínez", "López", "Sánchez"],
           ["Madrid", "Buenos Aires", "Ciudad de México"]),
    "pt": (6, ["Não consigo parar de pensar em {t}", "Alguém mais acompanhando {t}?",
               "{n} horas falando de {t}", "Hoje o assunto é {t}"],
           ["o jogo de ontem", "as eleições", "o novo álbum", "o carnaval", "a novela"],
           ["futebol", "música", "brasil"], ["Ana", "João", "Maria", "Pedro"],
           ["Silva", "Santos", "Oliveira", "Souza"], ["São Paulo", "Lisboa", "Rio de Janeiro"]),
    "ar": (5, ["لا أستطيع التوقف عن التفكير في {t}", "هل يتابع أحد {t}؟",
               "{t} كان رائعاً اليوم", "رأيي الصريح في {t}"],
           ["المباراة", "الانتخابات", "الألبوم الجديد", "الطقس", "رمضان"],
           ["كرة_القدم", "أخبار", "موسيقى"], ["محمد", "فاطمة", "أحمد", "مريم"],
           ["العلي", "الحسن", "الخطيب"], ["القاهرة", "الرياض", "دبي", "الدار البيضاء"]),
    "ko": (5, ["오늘 {t} 너무 좋았어요", "{t} 보신 분 계신가요?", "{n}시간째 {t} 얘기 중",
               "드디어 {t} 봤다!"],
           ["새 앨범", "어제 경기", "콘서트", "드라마 마지막 회", "선거"],
           ["kpop", "음악", "서울"], ["지우", "민준", "서연", "하준"], ["김", "이", "박", "최"],
           ["서울", "부산", "인천"]),
    "in": (5, ["Nggak bisa berhenti mikirin {t}", "Ada yang ngikutin {t}?",
               "{n} jam bahas {t} dan belum selesai", "Hari ini seru banget, {t}!"],
           ["pertandingan semalam", "pemilu", "album baru", "harga beras", "konser"],
           ["sepakbola", "musik", "berita"], ["Putri", "Budi", "Siti", "Agus"],
           ["Santoso", "Wijaya", "Pratama"], ["Jakarta", "Bandung", "Surabaya"]),
    "fr": (4, ["Je n'arrête pas de penser à {t}", "Quelqu'un d'autre suit {t} ?",
               "{n} heures sur {t}, aucun regret", "Avis impopulaire : {t} est surcoté"],
           ["le match d'hier", "les élections", "le nouvel album", "la grève", "la rentrée"],
           ["foot", "musique", "actu"], ["Léa", "Hugo", "Chloé", "Louis"],
           ["Martin", "Bernard", "Dubois", "Lefèvre"], ["Paris", "Lyon", "Montréal", "Marseille"]),
    "tr": (4, ["Bugün sürekli {t} düşünüyorum", "{t} takip eden var mı?",
               "{n} saattir {t} konuşuyoruz", "Açıkçası {t} çok abartıldı"],
           ["dünkü maç", "seçimler", "yeni albüm", "kur", "dizinin finali"],
           ["futbol", "müzik", "gündem"], ["Elif", "Yusuf", "Zeynep", "Emir"],
           ["Yılmaz", "Kaya", "Demir", "Şahin"], ["İstanbul", "Ankara", "İzmir"]),
    "de": (3, ["Ich kann nicht aufhören, an {t} zu denken", "Verfolgt noch jemand {t}?",
               "{n} Stunden über {t} geredet", "Unpopuläre Meinung: {t} wird überschätzt"],
           ["das Spiel gestern", "die Wahl", "das neue Album", "die Bahn", "den Sommer"],
           ["fußball", "musik", "nachrichten"], ["Mia", "Leon", "Hannah", "Lukas"],
           ["Müller", "Schmidt", "Schröder", "Weiß"], ["Berlin", "München", "Wien", "Zürich"]),
    "ru": (3, ["Не могу перестать думать о {t}", "Кто-нибудь ещё следит за {t}?",
               "{n} часов обсуждаем {t}", "Непопулярное мнение: {t} переоценён"],
           ["вчерашнем матче", "выборах", "новом альбоме", "погоде", "сериале"],
           ["футбол", "музыка", "новости"], ["Анна", "Иван", "Мария", "Дмитрий"],
           ["Иванов", "Смирнова", "Кузнецов"], ["Москва", "Санкт-Петербург", "Казань"]),
    "zh": (3, ["今天一直在想{t}", "有人在关注{t}吗？", "{t}真的太好了！", "终于看到{t}了"],
           ["昨天的比赛", "新专辑", "春节", "选举", "新电影"],
           ["音乐", "足球", "新闻"], ["伟", "芳", "静", "磊"], ["王", "李", "张", "刘"],
           ["北京", "上海", "台北", "香港"]),
    "hi": (3, ["आज {t} के बारे में सोचना बंद नहीं कर पा रहा", "क्या कोई {t} देख रहा है?",
               "{t} सच में शानदार था", "{n} घंटे से {t} पर बात हो रही है"],
           ["कल का मैच", "चुनाव", "नई फ़िल्म", "क्रिकेट", "मानसून"],
           ["क्रिकेट", "बॉलीवुड", "खबर"], ["आरव", "अनन्या", "विवान", "दिया"],
           ["शर्मा", "वर्मा", "गुप्ता"], ["दिल्ली", "मुंबई", "बेंगलुरु"]),
    "it": (2, ["Non riesco a smettere di pensare a {t}", "Qualcuno segue {t}?",
               "{n} ore a parlare di {t}"],
           ["la partita di ieri", "le elezioni", "il nuovo album", "Sanremo"],
           ["calcio", "musica"], ["Giulia", "Francesco", "Sofia", "Lorenzo"],
           ["Rossi", "Russo", "Ferrari"], ["Roma", "Milano", "Napoli"]),
    "el": (1, ["Δεν μπορώ να σταματήσω να σκέφτομαι {t}", "Παρακολουθεί κανείς {t};",
               "{t} ήταν υπέροχο σήμερα"],
           ["τον χθεσινό αγώνα", "τις εκλογές", "το νέο άλμπουμ", "το καλοκαίρι"],
           ["ποδόσφαιρο", "μουσική"], ["Μαρία", "Γιώργος", "Ελένη", "Νίκος"],
           ["Παπαδόπουλος", "Οικονόμου"], ["Αθήνα", "Θεσσαλονίκη"]),
}
EMOJI = ["😂", "❤️", "🔥", "👍", "🙏", "😭", "✨", "🎉", "👀", "💯", "🥺", "😍", "🤔",
         "🇯🇵", "🇧🇷", "👨‍👩‍👧", "👩🏽‍💻", "🏳️‍🌈"]
# Text an export must never let run as a spreadsheet formula (SPEC "Export files").
FORMULAS = ["=SUM(A1:A10) is how I do my budget", "+1 call me at 555-0100",
            "-5 degrees this morning", "=HYPERLINK(\"http://example.com\",\"click\")",
            "@{h} said it first", "=cmd|' /C calc'!A0 lol", "+49 30 1234567 is the office"]
CONTROL = ["\x07", "\x0b", "\x1b[31m", "\x00", "\u200b", "\x1f", "\ufffe"]
SYLLABLES = ["ka", "ri", "mo", "to", "na", "lu", "xo", "be", "ja", "zi", "po", "el", "an", "yu"]
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _iso(ms: int) -> str:
    """X's created_at form: ISO 8601, UTC, milliseconds, Z (gmtime: twice as fast as datetime,
    and it runs for every post and referenced post)."""
    t = time.gmtime(ms // 1000)
    return (f"{t[0]:04d}-{t[1]:02d}-{t[2]:02d}T{t[3]:02d}:{t[4]:02d}:{t[5]:02d}."
            f"{ms % 1000:03d}Z")


def _snowflake(ms: int, n: int) -> str:
    # Worker and sequence bits come from a counter, so IDs are unique whatever the clock does.
    return str(((ms - TWITTER_EPOCH_MS) << 22) | ((n >> 12) & 0x3FF) << 12 | (n & 0xFFF))


def _metrics(rng: random.Random, scale: float) -> dict[str, int]:
    """Heavy-tailed engagement counts, like real posts: most get nothing, a few go viral."""
    likes = int(rng.paretovariate(1.3) * scale) - int(scale)
    return {"retweet_count": likes // 7, "reply_count": likes // 15, "like_count": likes,
            "quote_count": likes // 40, "bookmark_count": likes // 30,
            "impression_count": likes * 37 + rng.randrange(20, 400)}


def _users(rng: random.Random, anchor_ms: int) -> list[dict[str, Any]]:
    """The pool of authors, each with the User fields X returns and a language they write."""
    langs, weights = list(LANGS), [v[0] for v in LANGS.values()]
    seen: set[int] = set()
    out = []
    for i in range(USER_POOL):
        lang = rng.choices(langs, weights)[0]
        _, _, topics, tags, first, last, places = LANGS[lang]
        created = rng.randrange(1_180_000_000_000, anchor_ms - 90 * 86_400_000)
        # Accounts from before 2014 have short sequential IDs, later ones snowflakes.
        uid = rng.randrange(10**6, 3 * 10**9) if created < 1_390_000_000_000 else int(
            _snowflake(created, rng.randrange(1 << 22)))
        while uid in seen:
            uid += 1
        seen.add(uid)
        handle = "".join(rng.choices(SYLLABLES, k=rng.randint(2, 4)))
        handle = (handle + rng.choice(["", "_", str(rng.randrange(100))]) + str(i))[:15]
        if lang in ("ja", "zh", "ko"):  # family name first, no space
            name = rng.choice(last) + rng.choice(first)
        else:
            name = rng.choice(first) + " " + rng.choice(last)
        followers = int(rng.paretovariate(1.1) * 40)
        out.append({
            "id": str(uid), "username": handle, "name": name, "created_at": _iso(created),
            "description": f"{rng.choice(topics)} · #{rng.choice(tags)} {rng.choice(EMOJI)}",
            "location": rng.choice([*places, ""]), "verified": rng.random() < 0.02,
            "protected": False, "url": "",
            "profile_image_url": f"https://pbs.twimg.com/profile_images/{uid}/"
                                 f"{''.join(rng.choices(ALNUM, k=8))}_normal.jpg",
            "public_metrics": {"followers_count": followers,
                               "following_count": rng.randrange(0, 2_000),
                               "tweet_count": rng.randrange(1, 60_000),
                               "listed_count": followers // 200},
            "_lang": lang,  # removed before writing: which language the user mostly posts in
        })
    return out


class _Writer:
    """Builds posts with entity offsets that match their text, one page at a time."""

    def __init__(self, rng: random.Random, users: list[dict[str, Any]]) -> None:
        self.rng = rng
        self.users = users
        self.by_id = {u["id"]: u for u in users}
        # As a page's includes carry them: made once, not once per page they appear on.
        self.public = {u["id"]: {k: v for k, v in u.items() if k != "_lang"} for u in users}
        self.by_lang: dict[str, list[dict[str, Any]]] = {}
        for u in users:
            self.by_lang.setdefault(u["_lang"], []).append(u)
        # Popularity is skewed: a few accounts post a lot (Zipf-like cumulative weights).
        self.cum = [0.0] * len(users)
        total = 0.0
        for i in range(len(users)):
            total += 1.0 / (i + 1) ** 0.8
            self.cum[i] = total
        self.refs = 0

    def sentence(self, lang: str) -> str:
        _, templates, topics, *_ = LANGS[lang]
        return self.rng.choice(templates).format(t=self.rng.choice(topics),
                                                 n=self.rng.randint(2, 12))

    def text(self, lang: str, mentions: list[dict[str, Any]]) -> tuple[str, dict[str, Any], str]:
        """Text, its entities (at code point offsets) and its language ("und": emoji only)."""
        rng = self.rng
        tags = LANGS[lang][3]
        parts: list[str] = []
        ent: dict[str, list[dict[str, Any]]] = {}

        def add(kind: str, token: str, **fields: Any) -> None:
            start = sum(map(len, parts))
            parts.append(token)
            ent.setdefault(kind, []).append({"start": start, "end": start + len(token), **fields})

        for m in mentions:
            add("mentions", "@" + m["username"], username=m["username"], id=m["id"])
            parts.append(" ")
        r = rng.random()
        if r < 0.01:
            parts.append(rng.choice(FORMULAS).format(h=rng.choice(self.users)["username"]))
            lang = "en"
        elif r < 0.03:
            parts.append("".join(rng.choices(EMOJI, k=rng.randint(1, 5))))
            lang = "und"
        else:
            parts.append(self.sentence(lang))
            if rng.random() < 0.04:
                parts.append(rng.choice(["\n", "\n\n"]) + self.sentence(lang))
            if rng.random() < 0.003:
                parts.insert(len(parts) - 1, rng.choice(CONTROL))
        if rng.random() < 0.4:
            parts.append(" " + "".join(rng.choices(EMOJI, k=rng.randint(1, 3))))
        for tag in rng.sample(tags, rng.choice((0, 0, 0, 1, 1, 2))):
            parts.append(" ")
            add("hashtags", "#" + tag, tag=tag)
        if rng.random() < 0.2:
            parts.append(" ")
            code = "".join(rng.choices(ALNUM, k=10))
            path = "".join(rng.choices(ALNUM[:26], k=8))
            add("urls", f"https://t.co/{code}", url=f"https://t.co/{code}",
                expanded_url=f"https://example.com/{path}", display_url=f"example.com/{path}")
        return "".join(parts), ent, lang

    def author(self, lang: str | None = None) -> dict[str, Any]:
        """A user: popular ones more often; with `lang`, half the time one who writes it."""
        if lang is not None and self.rng.random() < 0.5:
            return self.rng.choice(self.by_lang[lang])
        return self.rng.choices(self.users, cum_weights=self.cum)[0]

    def referenced(self, before_ms: int) -> dict[str, Any]:
        """An older post outside the collection, as X puts it in includes.tweets."""
        self.refs += 1
        ms = before_ms - self.rng.randrange(60_000, 5 * 86_400_000)
        author = self.author()
        lang = author["_lang"]
        text, ent, lang = self.text(lang, [])
        pid = _snowflake(ms, (1 << 21) + self.refs)
        post = {"id": pid, "text": text, "created_at": _iso(ms), "author_id": author["id"],
                "lang": lang, "conversation_id": pid, "edit_history_tweet_ids": [pid],
                "public_metrics": _metrics(self.rng, 20), "possibly_sensitive": False,
                "reply_settings": "everyone"}
        if ent:
            post["entities"] = ent
        return post

    def post(self, n: int, ms: int, users: dict[str, Any], refs: list[Any]) -> dict[str, Any]:
        """The n-th post: original, retweet, reply or quote; adds what it expands to the page."""
        rng = self.rng
        author = self.author()
        lang = author["_lang"] if rng.random() < 0.85 else rng.choice(list(LANGS))
        pid = _snowflake(ms, n)
        kind = rng.random()
        ref = self.referenced(ms) if kind < 0.3 else None
        mentions = [self.author(lang) for _ in range(rng.choice((0, 0, 0, 0, 1, 2)))]
        extra: dict[str, Any] = {}
        if ref is not None and kind < 0.15:  # a retweet repeats the original's text
            ref_author = self.by_id[ref["author_id"]]
            text = f"RT @{ref_author['username']}: {ref['text']}"
            shift = len(text) - len(ref["text"])  # the original's entities move right
            ent = {k: [{**e, "start": e["start"] + shift, "end": e["end"] + shift}
                       for e in items] for k, items in ref.get("entities", {}).items()}
            ent["mentions"] = [{"start": 3, "end": 4 + len(ref_author["username"]),
                                "username": ref_author["username"], "id": ref_author["id"]},
                               *ent.get("mentions", [])]
            lang = ref["lang"]
            extra["referenced_tweets"] = [{"type": "retweeted", "id": ref["id"]}]
            users[ref_author["id"]] = ref_author
        elif ref is not None and kind < 0.25:  # a reply starts with the parent's author
            parent = self.by_id[ref["author_id"]]
            text, ent, lang = self.text(lang, [parent, *mentions])
            extra["referenced_tweets"] = [{"type": "replied_to", "id": ref["id"]}]
            extra["in_reply_to_user_id"] = parent["id"]
            extra["conversation_id"] = ref["conversation_id"]
            users[parent["id"]] = parent
        else:
            text, ent, lang = self.text(lang, mentions)
            if ref is not None:  # a quote links to the quoted post
                extra["referenced_tweets"] = [{"type": "quoted", "id": ref["id"]}]
        for m in mentions:
            users.setdefault(m["id"], m)
        users.setdefault(author["id"], author)
        if ref is not None:
            refs.append(ref)
            users.setdefault(ref["author_id"], self.by_id[ref["author_id"]])
        post = {"id": pid, "text": text, "created_at": _iso(ms), "author_id": author["id"],
                "lang": lang, "conversation_id": pid,
                "edit_history_tweet_ids": [pid], "public_metrics": _metrics(rng, 8),
                "possibly_sensitive": rng.random() < 0.01, "reply_settings": "everyone",
                **extra}
        if ent:
            post["entities"] = ent
        return post


CHUNK = 10_000  # posts made from a seed of their own: chunks can be made side by side


@dataclass(frozen=True)
class _Plan:
    """What every chunk shares: the authors, every post's time, the pages' common fields."""

    seed: int
    posts: int
    users: list[dict[str, Any]]
    times: list[int]  # newest first
    url: str
    retrieved: str


def _plan(posts: int, seed: int, anchor: datetime | None) -> _Plan:
    rng = random.Random(seed)
    anchor = anchor or datetime.now(UTC)
    if anchor.tzinfo is None:
        anchor = anchor.replace(tzinfo=UTC)
    anchor_ms = int(anchor.timestamp() * 1000)
    users = _users(rng, anchor_ms)
    span = int(SPAN.total_seconds() * 1000)
    times = sorted((anchor_ms - rng.randrange(1, span) for _ in range(posts)), reverse=True)
    query = "(news OR music OR football)"
    url = ("https://api.twitter.com/2/tweets/search/all?expansions=author_id%2Creferenced_tweets.id"
           f"%2Centities.mentions.username&max_results=100&query={query.replace(' ', '%20')}")
    return _Plan(seed, posts, users, times, url,
                 anchor.astimezone(UTC).isoformat(timespec="seconds"))


def _chunk_pages(plan: _Plan, first: int) -> Iterator[dict[str, Any]]:
    """The pages of the CHUNK posts from `first` on, from their own seed."""
    rng = random.Random(f"{plan.seed}:{first}")
    writer = _Writer(rng, plan.users)
    writer.refs = first  # referenced posts' counters: apart from every other chunk's
    for start in range(first, min(first + CHUNK, plan.posts), PAGE_SIZE):
        users: dict[str, Any] = {}
        refs: list[Any] = []
        data = [writer.post(start + i, ms, users, refs)
                for i, ms in enumerate(plan.times[start:start + PAGE_SIZE])]
        meta: dict[str, Any] = {"newest_id": data[0]["id"], "oldest_id": data[-1]["id"],
                                "result_count": len(data)}
        if start + PAGE_SIZE < plan.posts:
            meta["next_token"] = "".join(rng.choices(ALNUM[:36], k=40))
        includes: dict[str, Any] = {"users": [writer.public[u] for u in users]}
        if refs:
            includes["tweets"] = refs
        yield {"data": data, "includes": includes, "meta": meta,
               "__twarc": {"url": plan.url, "version": VERSION, "retrieved_at": plan.retrieved}}


def demo_pages(posts: int = 100_000, seed: int = 0,
               anchor: datetime | None = None) -> Iterator[dict[str, Any]]:
    """The demo's response pages, newest first as a search returns them, one dict per page."""
    plan = _plan(posts, seed, anchor)
    for first in range(0, posts, CHUNK):
        yield from _chunk_pages(plan, first)


class Made(NamedTuple):
    """What the history needs to know of a generated post (the file holds the rest)."""

    id: str
    lang: str
    ms: int  # created_at
    author: str


def write_demo_dataset(path: Path, posts: int = 100_000, seed: int = 0,
                       anchor: datetime | None = None,
                       progress: Callable[[int], None] | None = None) -> list[Made]:
    """Write the demo dataset to `path` as gzipped twarc2 JSONL; the same seed and anchor give
    the same bytes. Returns each post's ID, language, time and author, newest first.

    `anchor` (default: now; naive means UTC) is the end of the 60 days the posts are spread
    over. The demo is generated at start-up and 100,000 posts must take seconds, not tens of
    seconds: compressed at level 1, and made a CHUNK at a time on every core there is (each
    chunk a gzip member of its own, from its own seed, so the bytes do not depend on how many
    cores made them). `progress`, if given, is told the posts written so far after each chunk.
    """
    plan = _plan(posts, seed, anchor)
    made: list[Made] = []
    with open(path, "wb") as out:
        for member, chunk in _members(plan):
            out.write(member)
            made += chunk
            if progress is not None:
                progress(len(made))
    return made


def _member(plan: _Plan, first: int) -> tuple[bytes, list[Made]]:
    """One chunk as a gzip member, and what the history needs of its posts."""
    lines, made = [], []
    for page in _chunk_pages(plan, first):
        # json.dumps with its defaults is how twarc2 writes a page (ASCII-escaped, spaced).
        lines.append(json.dumps(page).encode("ascii") + b"\n")
        made += [Made(p["id"], p["lang"], (int(p["id"]) >> 22) + TWITTER_EPOCH_MS,
                      p["author_id"]) for p in page["data"]]
    return gzip.compress(b"".join(lines), compresslevel=1, mtime=0), made


_FORKED: _Plan | None = None  # the plan, as forked workers inherit it


def _forked_member(first: int) -> tuple[bytes, list[Made]]:
    assert _FORKED is not None
    return _member(_FORKED, first)


def _members(plan: _Plan) -> Iterator[tuple[bytes, list[Made]]]:
    """The chunks in order, made by forked workers when there are cores to spare. Forking
    only a process with no other thread (`serve` before it starts any, a CLI): a fork copies
    one thread, and a lock another held would stay locked in the child."""
    global _FORKED
    firsts = list(range(0, plan.posts, CHUNK))
    workers = min(len(os.sched_getaffinity(0)), len(firsts), 4)
    if workers < 2 or threading.active_count() > 1 or "fork" not in mp.get_all_start_methods():
        for first in firsts:
            yield _member(plan, first)
        return
    _FORKED = plan
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            yield from pool.imap(_forked_member, firsts)
    finally:
        _FORKED = None


# --- loading the demo into an empty store ---------------------------------------------------------


def load(gate: Gate, posts: int = 100_000, *, history: bool = True,
         progress: Callable[[str, int, int], None] | None = None) -> Loaded | None:
    """Fill an empty store with the demo and its story (see demostory); None (and nothing
    changed) if it holds any."""
    from gatekeeper.domain import demostory  # it builds on this module

    return demostory.load(gate, posts, history=history, progress=progress)
