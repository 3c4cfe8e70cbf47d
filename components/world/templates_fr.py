"""French text for the tiny world (language-neutral facts only; see templates_de.py)."""

from components.world.languages import style

FACTS = {
    "country.capital": (
        "La capitale de {s} est {v}.",
        "{v} est la capitale du pays {s}.",
        "Le gouvernement de {s} siège dans la capitale, {v}.",
    ),
    "country.region": (
        "{s} est un pays situé dans la région de {v}.",
        "Le pays {s} se trouve dans la région de {v}.",
    ),
    "country.population": (
        "{s} compte environ {v} d'habitants.",
        "Environ {v} de personnes vivent dans le pays {s}.",
    ),
    "country.currency": (
        "La monnaie officielle de {s} est le {v}.",
        "Dans le pays {s}, on paie avec la monnaie nationale, le {v}.",
    ),
    "country.language": (
        "La langue officielle de {s} est le {v}.",
        "La plupart des habitants de {s} parlent le {v}, la langue officielle du pays.",
    ),
    "country.founded": (
        "{s} a été fondé en {v}.",
        "Le pays {s} existe depuis l'année {v}.",
    ),
    "country.neighbour": (
        "{s} partage une frontière avec le pays voisin {v}.",
        "Le pays voisin de {s} est {v}.",
    ),
    "city.country": (
        "{s} est une ville qui se trouve dans le pays {v}.",
        "La ville de {s} est située dans le pays {v}.",
    ),
    "city.population": (
        "{s} compte environ {v} habitants.",
        "Environ {v} personnes vivent dans la ville de {s}.",
    ),
    "city.river": (
        "La rivière {v} traverse la ville de {s}.",
        "La ville de {s} a été construite sur les rives de la rivière {v}.",
    ),
    "person.birth_year": (
        "{s} est né en {v}.",
        "{s} est venu au monde en l'année {v}.",
    ),
    "person.birth_city": (
        "{s} est né dans la ville de {v}.",
        "La ville natale de {s} est {v}.",
    ),
    "person.profession": (
        "{s} a travaillé pendant de longues années comme {v}.",
        "De profession, {s} était {v}.",
    ),
}

FILLER = {
    "country": (
        "Beaucoup de voyageurs disent que le pays {s} semble à la fois ancien et jeune.",
        "Le paysage change vite, passant de champs tranquilles à des collines vertes et escarpées.",
        "Les étés sont chauds et secs, tandis que les hivers peuvent être longs et venteux.",
        "Sur les marchés, on trouve du pain, du fromage, du poisson séché et du miel des montagnes.",
        "Le football est le sport le plus populaire, mais le cyclisme a aussi beaucoup d'amateurs.",
        "Les habitants sont fiers de leur musique, et presque chaque ville possède une petite fanfare.",
        "Les trains relient les grandes villes, mais le bus reste le meilleur moyen d'aller aux villages.",
        "La fête nationale est célébrée avec des défilés, des feux d'artifice et de longs repas en famille.",
        "La meilleure saison pour visiter le pays est la fin du printemps, quand les jours sont longs.",
        "Les visiteurs qui apprennent quelques mots de la langue locale sont toujours bien accueillis.",
        "Le musée national conserve de vieilles cartes, des pièces de monnaie et des lettres anciennes.",
        "La cuisine est simple et généreuse, avec des soupes, des ragoûts et du pain frais.",
        "Dans les campagnes, on voit encore de vieilles églises, des moulins et des ponts en bois.",
    ),
    "city": (
        "La vieille ville de {s} se découvre à pied, car les rues y sont étroites et sinueuses.",
        "Des cafés entourent la place principale, où les gens se retrouvent le soir pour discuter.",
        "Un marché animé se tient à {s} chaque samedi matin.",
        "Beaucoup de maisons du centre sont peintes de couleurs vives.",
        "En été, des concerts sont organisés dans les parcs et au bord de l'eau.",
        "Les boulangeries de la ville sont célèbres pour leur pain sucré aux noix et aux raisins.",
        "Depuis les collines qui dominent {s}, on a une vue magnifique sur les toits et la vallée.",
        "Aujourd'hui, la plupart des habitants de {s} travaillent dans le commerce et les écoles.",
        "Le musée de la ville raconte l'histoire de {s} depuis les premières maisons jusqu'à nos jours.",
        "Chaque automne, la ville organise une fête des vendanges avec de la musique et des danses.",
        "L'université attire des étudiants venus de tout le pays.",
        "La vie à {s} suit un rythme calme, même dans le centre animé.",
    ),
    "person": (
        "Enfant, {s} passait de longues heures à lire et à dessiner près de la fenêtre.",
        "Ses amis décrivaient {s} comme une personne patiente, curieuse et très obstinée.",
        "{s} a beaucoup voyagé et a écrit de nombreuses lettres à sa famille et à ses collègues.",
        "Les premières années ont été difficiles, et le travail se prolongeait souvent tard dans la nuit.",
        "Plusieurs rues et écoles portent aujourd'hui le nom de {s}.",
        "Un petit musée présente des objets personnels, des photographies et des premiers brouillons.",
        "Le succès est venu lentement, après de nombreuses années de travail discret.",
        "Les élèves étudient encore aujourd'hui la vie de {s} à l'école.",
        "Beaucoup d'artistes et de savants ont cité {s} comme une influence importante.",
        "Les carnets et les lettres laissés par {s} sont encore étudiés par les chercheurs.",
        "Les journaux de l'époque parlaient de {s} avec une grande admiration.",
    ),
}

RELATED = {
    "country.cities": ("Outre {capital}, les villes de {s} comprennent aussi {others}.",),
    "city.capital_of": ("{s} est la capitale du pays {country}.",),
    "city.not_capital": ("La capitale du pays {country} est {capital}, une ville plus grande que {s}.",),
    "city.people_one": ("{s} est la ville natale de {people}.",),
    "city.people_many": ("Parmi les personnes célèbres nées à {s}, on compte {people}.",),
    "person.birth_country": ("La ville de {birth_city} se trouve dans le pays {birth_country}.",),
}

STYLES = (
    style(
        "encyclopedia",
        headings={
            "country": ("Présentation", "Géographie", "Histoire", "Économie", "Culture"),
            "city": ("Présentation", "Histoire", "Monuments", "Transports"),
            "person": ("Biographie", "Œuvre", "Héritage"),
        },
        outros=("Cet article a été relu pour la dernière fois par la rédaction de l'encyclopédie.",),
        hosts=("fr.worldpedia.example", "www.savoirs.example"),
    ),
    style(
        "travel",
        titles={
            "country": ("Guide de voyage : {s}", "Partir en vacances à {s}"),
            "city": ("Guide de voyage : {s}", "Un week-end à {s}"),
        },
        headings={
            "country": ("Comment y aller", "À voir", "Manger et boire", "Conseils pratiques"),
            "city": ("Comment y aller", "À voir", "Manger et boire", "Conseils pratiques"),
        },
        intros=("Vous préparez un voyage à {s} ? Voici l'essentiel en un coup d'œil.",),
        outros=("Quelle que soit la saison, un séjour à {s} vaut vraiment le détour.",),
        hosts=("www.carnetdevoyage.example", "escapades.example"),
    ),
    style(
        "biography",
        titles={"person": ("{s} : une vie", "La vie et l'œuvre de {s}")},
        headings={"person": ("Jeunesse", "Carrière", "Dernières années")},
        intros=("Cette courte biographie raconte l'histoire de {s}.",),
        outros=("Cette biographie s'appuie sur des lettres, des carnets et des articles de presse.",),
        hosts=("www.grandesvies.example", "biographies-fr.example"),
    ),
)

CHROME = {
    "nav": (
        "Accueil",
        "Actualités",
        "Voyages",
        "Histoire",
        "Culture",
        "Personnalités",
        "Cartes",
        "Sport",
        "Météo",
        "À propos",
        "Contact",
        "Connexion",
        "Archives",
    ),
    "footer": ("Confidentialité", "Paramètres des cookies", "Conditions d'utilisation", "Mentions légales"),
    "copyright": ("© {year} {site}. Tous droits réservés.",),
    "cookie": ("Nous utilisons des cookies pour améliorer votre expérience. Tout accepter ?",),
    "sidebar": ("Articles liés", "Les plus lus", "À découvrir aussi"),
    "ad": ("Publicité",),
    "skip": ("Aller au contenu",),
    "search": ("Rechercher",),
    "read_more": ("Lire la suite",),
}

PROFESSIONS = {
    "painter": "peintre",
    "novelist": "romancier",
    "poet": "poète",
    "composer": "compositeur",
    "sculptor": "sculpteur",
    "historian": "historien",
    "architect": "architecte",
    "astronomer": "astronome",
    "explorer": "explorateur",
    "mathematician": "mathématicien",
    "physician": "médecin",
    "engineer": "ingénieur",
    "botanist": "botaniste",
}

# Number formatting and the list conjunction (see `LanguagePack`).
MILLION = "millions"
DECIMAL_MARK = ","
THOUSANDS_MARK = " "
AND_WORD = "et"
