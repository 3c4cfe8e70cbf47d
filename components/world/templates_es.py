"""Spanish text for the tiny world (language-neutral facts only; see templates_de.py)."""

from components.world.languages import style

FACTS = {
    "country.capital": (
        "La capital de {s} es {v}.",
        "{v} es la capital del país {s}.",
        "El gobierno de {s} tiene su sede en la capital, {v}.",
    ),
    "country.region": (
        "{s} es un país situado en la región de {v}.",
        "El país {s} se encuentra en la región de {v}.",
    ),
    "country.population": (
        "{s} tiene unos {v} de habitantes.",
        "En el país {s} viven aproximadamente {v} de personas.",
    ),
    "country.currency": (
        "La moneda oficial de {s} es el {v}.",
        "En {s} se paga con la moneda nacional, el {v}.",
    ),
    "country.language": (
        "La lengua oficial de {s} es el {v}.",
        "La mayoría de los habitantes de {s} hablan {v}, la lengua oficial del país.",
    ),
    "country.founded": (
        "{s} fue fundado en el año {v}.",
        "El país {s} existe desde el año {v}.",
    ),
    "country.neighbour": (
        "{s} comparte una frontera con el país vecino {v}.",
        "El país vecino de {s} es {v}.",
    ),
    "city.country": (
        "{s} es una ciudad que se encuentra en el país {v}.",
        "La ciudad de {s} está situada en el país {v}.",
    ),
    "city.population": (
        "{s} tiene unos {v} habitantes.",
        "En la ciudad de {s} viven aproximadamente {v} personas.",
    ),
    "city.river": (
        "El río {v} atraviesa la ciudad de {s}.",
        "La ciudad de {s} fue construida a orillas del río {v}.",
    ),
    "person.birth_year": (
        "{s} nació en el año {v}.",
        "{s} vino al mundo en {v}.",
    ),
    "person.birth_city": (
        "{s} nació en la ciudad de {v}.",
        "La ciudad natal de {s} es {v}.",
    ),
    "person.profession": (
        "{s} trabajó durante muchos años como {v}.",
        "De profesión, {s} era {v}.",
    ),
}

FILLER = {
    "country": (
        "Muchos viajeros dicen que el país {s} parece a la vez antiguo y joven.",
        "El paisaje cambia rápidamente, de campos tranquilos a colinas verdes y empinadas.",
        "Los veranos son cálidos y secos, mientras que los inviernos pueden ser largos y ventosos.",
        "En los mercados se vende pan, queso, pescado seco y miel de las montañas.",
        "El fútbol es el deporte más popular, aunque el ciclismo también tiene muchos aficionados.",
        "La gente está orgullosa de su música, y casi todos los pueblos tienen una pequeña banda.",
        "Los trenes unen las ciudades grandes, pero el autobús es la mejor forma de llegar a los pueblos.",
        "La fiesta nacional se celebra con desfiles, fuegos artificiales y largas comidas familiares.",
        "La mejor época para visitar el país es el final de la primavera, cuando los días son largos.",
        "Los visitantes que aprenden unas palabras del idioma local siempre son bien recibidos.",
        "El museo nacional guarda mapas antiguos, monedas y cartas de todas las épocas.",
        "La cocina es sencilla y abundante, con sopas, guisos y pan recién hecho.",
        "En el campo todavía se ven iglesias antiguas, molinos y puentes de madera.",
    ),
    "city": (
        "El casco antiguo de {s} se recorre mejor a pie, porque las calles son estrechas y sinuosas.",
        "Hay muchos cafés en la plaza principal, donde la gente se reúne por la tarde para charlar.",
        "Cada sábado por la mañana se celebra un mercado muy animado en {s}.",
        "Muchas casas del centro están pintadas de colores vivos.",
        "En verano se organizan conciertos en los parques y junto al agua.",
        "Las panaderías de la ciudad son famosas por su pan dulce con nueces y pasas.",
        "Desde las colinas que rodean {s} se tiene una amplia vista sobre los tejados y el valle.",
        "Hoy la mayoría de los habitantes de {s} trabaja en el comercio, las escuelas y los hospitales.",
        "El museo de la ciudad cuenta la historia de {s} desde las primeras casas hasta hoy.",
        "Cada otoño la ciudad celebra una fiesta de la cosecha con música, comida y baile.",
        "La universidad atrae a estudiantes de todo el país.",
        "La vida en {s} sigue un ritmo tranquilo, incluso en el centro.",
    ),
    "person": (
        "De niño, {s} pasaba muchas horas leyendo y dibujando junto a la ventana.",
        "Sus amigos describían a {s} como una persona paciente, curiosa y muy testaruda.",
        "{s} viajó mucho y escribió numerosas cartas a su familia y a sus colegas.",
        "Los primeros años fueron difíciles, y a menudo el trabajo duraba hasta muy tarde.",
        "Varias calles y escuelas llevan hoy el nombre de {s}.",
        "Un pequeño museo muestra objetos personales, fotografías y primeros borradores.",
        "El éxito llegó despacio, después de muchos años de trabajo silencioso.",
        "Todavía hoy los alumnos estudian la vida de {s} en la escuela.",
        "Muchos artistas y estudiosos posteriores citaron a {s} como una gran influencia.",
        "Los cuadernos y las cartas que dejó {s} siguen siendo estudiados por los investigadores.",
        "Los periódicos de la época hablaban de {s} con gran admiración.",
    ),
}

RELATED = {
    "country.cities": ("Además de {capital}, entre las ciudades de {s} se encuentran {others}.",),
    "city.capital_of": ("{s} es la capital del país {country}.",),
    "city.not_capital": ("La capital del país {country} es {capital}, una ciudad más grande que {s}.",),
    "city.people_one": ("{s} es la ciudad natal de {people}.",),
    "city.people_many": ("Entre las personas famosas nacidas en {s} se encuentran {people}.",),
    "person.birth_country": ("La ciudad de {birth_city} se encuentra en el país {birth_country}.",),
}

STYLES = (
    style(
        "encyclopedia",
        headings={
            "country": ("Descripción", "Geografía", "Historia", "Economía", "Cultura"),
            "city": ("Descripción", "Historia", "Monumentos", "Transporte"),
            "person": ("Biografía", "Obra", "Legado"),
        },
        outros=("Este artículo fue revisado por última vez por la redacción de la enciclopedia.",),
        hosts=("es.worldpedia.example", "www.saberes.example"),
    ),
    style(
        "travel",
        titles={
            "country": ("Guía de viaje: {s}", "Vacaciones en {s}"),
            "city": ("Guía de viaje: {s}", "Un fin de semana en {s}"),
        },
        headings={
            "country": ("Cómo llegar", "Qué ver", "Comer y beber", "Consejos prácticos"),
            "city": ("Cómo llegar", "Qué ver", "Comer y beber", "Consejos prácticos"),
        },
        intros=("¿Está preparando un viaje a {s}? Aquí tiene lo esencial de un vistazo.",),
        outros=("En cualquier época del año, un viaje a {s} merece la pena.",),
        hosts=("www.cuadernodeviaje.example", "escapadas.example"),
    ),
    style(
        "biography",
        titles={"person": ("{s}: una vida", "Vida y obra de {s}")},
        headings={"person": ("Primeros años", "Carrera", "Últimos años")},
        intros=("Esta breve biografía cuenta la historia de {s}.",),
        outros=("Esta biografía se basa en cartas, cuadernos y artículos de prensa.",),
        hosts=("www.grandesvidas.example", "biografias.example"),
    ),
)

CHROME = {
    "nav": (
        "Inicio",
        "Noticias",
        "Viajes",
        "Historia",
        "Cultura",
        "Personajes",
        "Mapas",
        "Deportes",
        "Tiempo",
        "Quiénes somos",
        "Contacto",
        "Iniciar sesión",
        "Archivo",
    ),
    "footer": ("Privacidad", "Configuración de cookies", "Condiciones de uso", "Aviso legal"),
    "copyright": ("© {year} {site}. Todos los derechos reservados.",),
    "cookie": ("Utilizamos cookies para mejorar su experiencia. ¿Acepta todas las cookies?",),
    "sidebar": ("Artículos relacionados", "Lo más leído", "También le puede interesar"),
    "ad": ("Publicidad",),
    "skip": ("Saltar al contenido",),
    "search": ("Buscar",),
    "read_more": ("Leer más",),
}

PROFESSIONS = {
    "painter": "pintor",
    "novelist": "novelista",
    "poet": "poeta",
    "composer": "compositor",
    "sculptor": "escultor",
    "historian": "historiador",
    "architect": "arquitecto",
    "astronomer": "astrónomo",
    "explorer": "explorador",
    "mathematician": "matemático",
    "physician": "médico",
    "engineer": "ingeniero",
    "botanist": "botánico",
}

# Number formatting and the list conjunction (see `LanguagePack`).
MILLION = "millones"
DECIMAL_MARK = ","
THOUSANDS_MARK = "."
AND_WORD = "y"
