"""German text for the tiny world. Non-English pages state the language-neutral facts (no landmarks or
works, whose names are English) in grammatical sentences, enough of them for language ID to be sure."""

from components.world.languages import style

FACTS = {
    "country.capital": (
        "Die Hauptstadt von {s} ist {v}.",
        "{v} ist die Hauptstadt des Landes {s}.",
        "Der Sitz der Regierung von {s} befindet sich in der Hauptstadt {v}.",
    ),
    "country.region": (
        "{s} ist ein Land in der Region {v}.",
        "{s} liegt in der Region {v}.",
    ),
    "country.population": (
        "{s} hat rund {v} Einwohner.",
        "In {s} leben etwa {v} Menschen.",
    ),
    "country.currency": (
        "Die Landeswährung von {s} heißt {v}.",
        "In {s} bezahlt man mit der Währung {v}.",
    ),
    "country.language": (
        "Die Amtssprache von {s} ist {v}.",
        "In {s} spricht man vor allem {v}, die offizielle Sprache des Landes.",
    ),
    "country.founded": (
        "{s} wurde im Jahr {v} gegründet.",
        "Der Staat {s} besteht seit dem Jahr {v}.",
    ),
    "country.neighbour": (
        "{s} grenzt an das Nachbarland {v}.",
        "Das Nachbarland von {s} ist {v}.",
    ),
    "city.country": (
        "{s} ist eine Stadt in {v}.",
        "Die Stadt {s} liegt in {v}.",
    ),
    "city.population": (
        "{s} hat etwa {v} Einwohner.",
        "In {s} leben rund {v} Menschen.",
    ),
    "city.river": (
        "Durch {s} fließt der Fluss {v}.",
        "{s} liegt am Ufer des Flusses {v}.",
    ),
    "person.birth_year": (
        "{s} wurde im Jahr {v} geboren.",
        "{s} kam im Jahr {v} zur Welt.",
    ),
    "person.birth_city": (
        "{s} wurde in der Stadt {v} geboren.",
        "Der Geburtsort von {s} ist die Stadt {v}.",
    ),
    "person.profession": (
        "{s} arbeitete viele Jahre als {v}.",
        "Von Beruf war {s} {v}.",
    ),
}

FILLER = {
    "country": (
        "Viele Reisende sagen, dass sich {s} zugleich alt und jung anfühlt.",
        "Die Landschaft wechselt schnell von ruhigen Feldern zu steilen grünen Hügeln.",
        "Im Sommer ist es warm und trocken, während die Winter lang und windig sein können.",
        "Auf den Märkten gibt es Brot, Käse, getrockneten Fisch und Honig aus den Bergen.",
        "Fußball ist die beliebteste Sportart, aber auch das Radfahren hat viele Anhänger.",
        "Die Menschen sind stolz auf ihre Musik, und fast jede Stadt hat eine kleine Kapelle.",
        "Züge verbinden die größeren Städte, doch in die Dörfer fährt man am besten mit dem Bus.",
        "Der Nationalfeiertag wird mit Umzügen, Feuerwerk und langen Familienessen gefeiert.",
        "Die beste Reisezeit ist der späte Frühling, wenn die Felder grün und die Tage lang sind.",
        "Wer ein paar Wörter der Landessprache lernt, wird überall herzlich empfangen.",
        "Das Nationalmuseum zeigt alte Karten, Münzen und Briefe aus allen Epochen des Landes.",
        "Auf dem Land stehen viele alte Kirchen, Mühlen und Brücken aus Holz.",
        "Die Küche ist einfach und kräftig, mit Suppen, Eintöpfen und frischem Brot.",
        "Die Schulen legen großen Wert auf den Unterricht in Geschichte und Musik.",
    ),
    "city": (
        "Die Altstadt von {s} erkundet man am besten zu Fuß, denn die Gassen sind eng und verwinkelt.",
        "Am Marktplatz gibt es viele Cafés, in denen sich die Menschen am Abend treffen.",
        "Jeden Samstagmorgen findet in {s} ein lebhafter Markt statt.",
        "Viele Häuser im Zentrum sind in hellen Farben gestrichen.",
        "Im Sommer finden in den Parks und am Flussufer Konzerte statt.",
        "Die Bäckereien der Stadt sind für ihr süßes Brot mit Nüssen und Rosinen bekannt.",
        "Von den Hügeln über {s} hat man einen weiten Blick über die Dächer und das Tal.",
        "Heute arbeiten die meisten Menschen in {s} im Handel, in Schulen und in kleinen Betrieben.",
        "Das Stadtmuseum erzählt die Geschichte von {s} von den ersten Häusern bis heute.",
        "Im Herbst feiert die Stadt ein Erntefest mit Musik, Essen und Tanz.",
        "Die Universität zieht Studenten aus dem ganzen Land an.",
        "Das Leben in {s} verläuft in einem ruhigen Tempo, selbst im belebten Zentrum.",
        "Eine kleine Straßenbahn verbindet den Bahnhof mit der Innenstadt.",
    ),
    "person": (
        "Schon als Kind verbrachte {s} viele Stunden mit Lesen und Zeichnen.",
        "Freunde beschrieben {s} als geduldig, neugierig und sehr hartnäckig.",
        "{s} reiste viel und schrieb zahlreiche Briefe an die Familie und an Kollegen.",
        "Die ersten Jahre waren schwierig, und oft wurde bis spät in die Nacht gearbeitet.",
        "Mehrere Straßen und Schulen tragen heute den Namen von {s}.",
        "Ein kleines Museum zeigt persönliche Gegenstände, Fotografien und frühe Entwürfe.",
        "Der Erfolg kam langsam, nach vielen Jahren stiller Arbeit.",
        "Bis heute lesen Schüler im Unterricht über das Leben von {s}.",
        "Viele spätere Künstler und Gelehrte nannten {s} als wichtiges Vorbild.",
        "Die Notizbücher und Briefe, die {s} hinterließ, werden noch immer erforscht.",
        "In den Zeitungen jener Zeit wurde mit großer Bewunderung über {s} geschrieben.",
    ),
}

RELATED = {
    "country.cities": ("Neben {capital} gehören auch {others} zu den Städten von {s}.",),
    "city.capital_of": ("{s} ist die Hauptstadt von {country}.",),
    "city.not_capital": ("Die Hauptstadt von {country} ist {capital}, eine größere Stadt als {s}.",),
    "city.people_one": ("{s} ist der Geburtsort von {people}.",),
    "city.people_many": ("Zu den bekannten Menschen aus {s} gehören {people}.",),
    "person.birth_country": ("Die Stadt {birth_city} liegt in {birth_country}.",),
}

STYLES = (
    style(
        "encyclopedia",
        headings={
            "country": ("Überblick", "Geographie", "Geschichte", "Wirtschaft", "Kultur"),
            "city": ("Überblick", "Geschichte", "Sehenswürdigkeiten", "Verkehr"),
            "person": ("Leben", "Werk", "Nachwirkung"),
        },
        outros=("Dieser Artikel wurde zuletzt von der Redaktion der Enzyklopädie geprüft.",),
        hosts=("de.worldpedia.example", "www.wissensportal.example"),
    ),
    style(
        "travel",
        titles={
            "country": ("Reiseführer: {s}", "Urlaub in {s}"),
            "city": ("Reiseführer: {s}", "Ein Wochenende in {s}"),
        },
        headings={
            "country": ("Anreise", "Sehenswertes", "Essen und Trinken", "Praktische Tipps"),
            "city": ("Anreise", "Sehenswertes", "Essen und Trinken", "Praktische Tipps"),
        },
        intros=("Sie planen eine Reise nach {s}? Hier finden Sie das Wichtigste auf einen Blick.",),
        outros=("Zu jeder Jahreszeit lohnt sich eine Reise nach {s}.",),
        hosts=("www.reisefieber.example", "unterwegs-magazin.example"),
    ),
    style(
        "biography",
        titles={"person": ("{s}: ein Leben", "Leben und Werk von {s}")},
        headings={"person": ("Frühe Jahre", "Beruf", "Spätere Jahre")},
        intros=("Diese kurze Biografie erzählt die Geschichte von {s}.",),
        outros=("Als Quellen dienten Briefe, Notizbücher und Zeitungsberichte.",),
        hosts=("www.lebenslaeufe.example", "biografien.example"),
    ),
)

CHROME = {
    "nav": (
        "Startseite",
        "Nachrichten",
        "Reisen",
        "Geschichte",
        "Kultur",
        "Menschen",
        "Karten",
        "Sport",
        "Wetter",
        "Über uns",
        "Kontakt",
        "Anmelden",
        "Archiv",
    ),
    "footer": ("Datenschutz", "Cookie-Einstellungen", "Nutzungsbedingungen", "Impressum", "Kontakt"),
    "copyright": ("© {year} {site}. Alle Rechte vorbehalten.",),
    "cookie": ("Wir verwenden Cookies, um Ihnen das beste Erlebnis zu bieten. Alle akzeptieren?",),
    "sidebar": ("Verwandte Artikel", "Meistgelesen", "Das könnte Sie auch interessieren"),
    "ad": ("Anzeige",),
    "skip": ("Zum Inhalt springen",),
    "search": ("Suche",),
    "read_more": ("Weiterlesen",),
}

PROFESSIONS = {
    "painter": "Maler",
    "novelist": "Schriftsteller",
    "poet": "Dichter",
    "composer": "Komponist",
    "sculptor": "Bildhauer",
    "historian": "Historiker",
    "architect": "Architekt",
    "astronomer": "Astronom",
    "explorer": "Entdecker",
    "mathematician": "Mathematiker",
    "physician": "Arzt",
    "engineer": "Ingenieur",
    "botanist": "Botaniker",
}

# Number formatting and the list conjunction (see `LanguagePack`).
MILLION = "Millionen"
DECIMAL_MARK = ","
THOUSANDS_MARK = "."
AND_WORD = "und"
