"""Italian text for the tiny world (language-neutral facts only; see templates_de.py)."""

from components.world.languages import style

FACTS = {
    "country.capital": (
        "La capitale di {s} è {v}.",
        "{v} è la capitale del paese {s}.",
        "Il governo di {s} ha sede nella capitale, {v}.",
    ),
    "country.region": (
        "{s} è un paese che si trova nella regione di {v}.",
        "Il paese {s} si trova nella regione di {v}.",
    ),
    "country.population": (
        "{s} ha circa {v} di abitanti.",
        "Nel paese {s} vivono circa {v} di persone.",
    ),
    "country.currency": (
        "La moneta ufficiale di {s} è il {v}.",
        "Nel paese {s} si paga con la moneta nazionale, il {v}.",
    ),
    "country.language": (
        "La lingua ufficiale di {s} è il {v}.",
        "La maggior parte degli abitanti di {s} parla il {v}, la lingua ufficiale del paese.",
    ),
    "country.founded": (
        "{s} è stato fondato nel {v}.",
        "Il paese {s} esiste dall'anno {v}.",
    ),
    "country.neighbour": (
        "{s} confina con il paese vicino {v}.",
        "Il paese confinante con {s} è {v}.",
    ),
    "city.country": (
        "{s} è una città che si trova nel paese {v}.",
        "La città di {s} si trova nel paese {v}.",
    ),
    "city.population": (
        "{s} ha circa {v} abitanti.",
        "Nella città di {s} vivono circa {v} persone.",
    ),
    "city.river": (
        "Il fiume {v} attraversa la città di {s}.",
        "La città di {s} è stata costruita sulle rive del fiume {v}.",
    ),
    "person.birth_year": (
        "{s} è nato nel {v}.",
        "{s} venne al mondo nell'anno {v}.",
    ),
    "person.birth_city": (
        "{s} è nato nella città di {v}.",
        "La città natale di {s} è {v}.",
    ),
    "person.profession": (
        "{s} ha lavorato per molti anni come {v}.",
        "Di professione, {s} era {v}.",
    ),
}

FILLER = {
    "country": (
        "Molti viaggiatori dicono che il paese {s} sembra allo stesso tempo antico e giovane.",
        "Il paesaggio cambia in fretta, da campi tranquilli a colline verdi e ripide.",
        "Le estati sono calde e secche, mentre gli inverni possono essere lunghi e ventosi.",
        "Nei mercati si vendono pane, formaggio, pesce secco e miele delle montagne.",
        "Il calcio è lo sport più popolare, ma anche il ciclismo ha molti appassionati.",
        "La gente è orgogliosa della propria musica, e quasi ogni paese ha una piccola banda.",
        "I treni collegano le città più grandi, ma per raggiungere i villaggi conviene prendere l'autobus.",
        "La festa nazionale si celebra con sfilate, fuochi d'artificio e lunghi pranzi in famiglia.",
        "Il periodo migliore per visitare il paese è la tarda primavera, quando le giornate sono lunghe.",
        "I visitatori che imparano qualche parola della lingua locale sono sempre accolti con calore.",
        "Il museo nazionale conserva vecchie mappe, monete e lettere di ogni epoca.",
        "La cucina è semplice e abbondante, con zuppe, stufati e pane fresco.",
        "Nelle campagne si vedono ancora vecchie chiese, mulini e ponti di legno.",
    ),
    "city": (
        "Il centro storico di {s} si visita meglio a piedi, perché le strade sono strette e tortuose.",
        "Nella piazza principale ci sono molti caffè, dove la gente si incontra la sera per chiacchierare.",
        "Ogni sabato mattina a {s} si tiene un mercato molto vivace.",
        "Molte case del centro sono dipinte con colori vivaci.",
        "In estate si organizzano concerti nei parchi e lungo il fiume.",
        "Le panetterie della città sono famose per il pane dolce con noci e uvetta.",
        "Dalle colline sopra {s} si gode una vista ampia sui tetti e sulla valle.",
        "Oggi la maggior parte degli abitanti di {s} lavora nel commercio, nelle scuole e negli ospedali.",
        "Il museo cittadino racconta la storia di {s} dalle prime case fino ai giorni nostri.",
        "Ogni autunno la città organizza una festa del raccolto con musica, cibo e balli.",
        "L'università attira studenti da tutto il paese.",
        "La vita a {s} scorre con un ritmo tranquillo, anche nel centro più animato.",
    ),
    "person": (
        "Da bambino, {s} passava molte ore a leggere e a disegnare vicino alla finestra.",
        "Gli amici descrivevano {s} come una persona paziente, curiosa e molto testarda.",
        "{s} viaggiò molto e scrisse numerose lettere alla famiglia e ai colleghi.",
        "I primi anni furono difficili, e spesso il lavoro continuava fino a tarda notte.",
        "Diverse strade e scuole portano oggi il nome di {s}.",
        "Un piccolo museo espone oggetti personali, fotografie e prime bozze.",
        "Il successo arrivò lentamente, dopo molti anni di lavoro silenzioso.",
        "Ancora oggi gli studenti studiano la vita di {s} a scuola.",
        "Molti artisti e studiosi successivi hanno indicato {s} come un modello importante.",
        "I quaderni e le lettere lasciati da {s} sono ancora studiati dai ricercatori.",
        "I giornali dell'epoca parlavano di {s} con grande ammirazione.",
    ),
}

RELATED = {
    "country.cities": ("Oltre a {capital}, tra le città di {s} ci sono anche {others}.",),
    "city.capital_of": ("{s} è la capitale del paese {country}.",),
    "city.not_capital": ("La capitale del paese {country} è {capital}, una città più grande di {s}.",),
    "city.people_one": ("{s} è la città natale di {people}.",),
    "city.people_many": ("Tra le persone famose nate a {s} ci sono {people}.",),
    "person.birth_country": ("La città di {birth_city} si trova nel paese {birth_country}.",),
}

STYLES = (
    style(
        "encyclopedia",
        headings={
            "country": ("Descrizione", "Geografia", "Storia", "Economia", "Cultura"),
            "city": ("Descrizione", "Storia", "Monumenti", "Trasporti"),
            "person": ("Biografia", "Opere", "Eredità"),
        },
        outros=("Questo articolo è stato controllato l'ultima volta dalla redazione dell'enciclopedia.",),
        hosts=("it.worldpedia.example", "www.sapere.example"),
    ),
    style(
        "travel",
        titles={
            "country": ("Guida di viaggio: {s}", "Vacanze a {s}"),
            "city": ("Guida di viaggio: {s}", "Un fine settimana a {s}"),
        },
        headings={
            "country": ("Come arrivare", "Cosa vedere", "Mangiare e bere", "Consigli pratici"),
            "city": ("Come arrivare", "Cosa vedere", "Mangiare e bere", "Consigli pratici"),
        },
        intros=("State organizzando un viaggio a {s}? Ecco l'essenziale a colpo d'occhio.",),
        outros=("In ogni stagione, un viaggio a {s} vale davvero la pena.",),
        hosts=("www.diariodiviaggio.example", "gite.example"),
    ),
    style(
        "biography",
        titles={"person": ("{s}: una vita", "Vita e opere di {s}")},
        headings={"person": ("Giovinezza", "Carriera", "Ultimi anni")},
        intros=("Questa breve biografia racconta la storia di {s}.",),
        outros=("Questa biografia si basa su lettere, quaderni e articoli di giornale.",),
        hosts=("www.grandivite.example", "biografie.example"),
    ),
)

CHROME = {
    "nav": (
        "Home",
        "Notizie",
        "Viaggi",
        "Storia",
        "Cultura",
        "Personaggi",
        "Mappe",
        "Sport",
        "Meteo",
        "Chi siamo",
        "Contatti",
        "Accedi",
        "Archivio",
    ),
    "footer": ("Privacy", "Impostazioni dei cookie", "Termini di utilizzo", "Note legali"),
    "copyright": ("© {year} {site}. Tutti i diritti riservati.",),
    "cookie": ("Utilizziamo i cookie per migliorare la tua esperienza. Accetti tutti i cookie?",),
    "sidebar": ("Articoli correlati", "I più letti", "Potrebbe interessarti anche"),
    "ad": ("Pubblicità",),
    "skip": ("Vai al contenuto",),
    "search": ("Cerca",),
    "read_more": ("Continua a leggere",),
}

PROFESSIONS = {
    "painter": "pittore",
    "novelist": "romanziere",
    "poet": "poeta",
    "composer": "compositore",
    "sculptor": "scultore",
    "historian": "storico",
    "architect": "architetto",
    "astronomer": "astronomo",
    "explorer": "esploratore",
    "mathematician": "matematico",
    "physician": "medico",
    "engineer": "ingegnere",
    "botanist": "botanico",
}

# Number formatting and the list conjunction (see `LanguagePack`).
MILLION = "milioni"
DECIMAL_MARK = ","
THOUSANDS_MARK = "."
AND_WORD = "e"
