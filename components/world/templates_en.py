"""English text for the tiny world: fact templates, page styles, site chrome, plus the English-only texts
(PII paragraphs, junk pages, quiz pages). English pages are what the tiny GPT learns from, so every fact has
several phrasings and the filler sentences are plentiful and varied (pages about the same entity must not
look like near duplicates of each other).

Over 600 lines, and rightly: it is text, not logic -- sentence templates and word lists, one constant per
kind, that a reader scans rather than follows (the other languages' modules have the same constants)."""

from components.world.languages import style

FACTS = {
    "country.capital": (
        "The capital of {s} is {v}.",
        "{v} is the capital city of {s}.",
        "{s} is governed from its capital, {v}.",
        "The government of {s} sits in {v}, the capital.",
        "Most visitors to {s} arrive first in {v}, the capital of the country.",
    ),
    "country.region": (
        "{s} is a country in {v}.",
        "{s} lies in the region of {v}.",
        "Geographers place {s} in {v}.",
        "The country of {s} is part of {v}.",
    ),
    "country.population": (
        "{s} has a population of about {v} people.",
        "About {v} people live in {s}.",
        "The population of {s} is roughly {v}.",
        "According to the last census, {s} is home to around {v} people.",
    ),
    "country.currency": (
        "The currency of {s} is the {v}.",
        "In {s}, people pay with the {v}.",
        "The official currency of {s} is called the {v}.",
        "Prices in {s} are given in {v}, the national currency.",
    ),
    "country.language": (
        "The official language of {s} is {v}.",
        "Most people in {s} speak {v}, the official language.",
        "{v} is the official language of {s}.",
        "In {s}, schools and courts use {v}, the official language of the country.",
    ),
    "country.founded": (
        "{s} was founded in {v}.",
        "The state of {s} was established in {v}.",
        "{s} has existed as a country since {v}.",
        "Historians date the founding of {s} to the year {v}.",
    ),
    "country.neighbour": (
        "{s} shares a border with {v}.",
        "The neighbouring country of {s} is {v}.",
        "{s} borders {v}.",
        "{s} and {v} are neighbours and share a long border.",
    ),
    "city.country": (
        "{s} is a city in {v}.",
        "The city of {s} lies in {v}.",
        "{s} is located in {v}.",
        "{s} is one of the cities of {v}.",
    ),
    "city.population": (
        "{s} has a population of about {v}.",
        "About {v} people live in {s}.",
        "The population of {s} is around {v}.",
        "Roughly {v} residents call {s} home.",
    ),
    "city.river": (
        "The river {v} flows through {s}.",
        "{s} lies on the river {v}.",
        "{s} was built on the banks of the {v}.",
        "The {v} river runs through the centre of {s}.",
    ),
    "city.landmark": (
        "{s} is known for the {v}.",
        "The most famous landmark of {s} is the {v}.",
        "Visitors to {s} come to see the {v}.",
        "The {v} is the best-known sight in {s}.",
    ),
    "person.birth_year": (
        "{s} was born in {v}.",
        "{s} was born in the year {v}.",
        "Records show that {s} was born in {v}.",
        "{s}, born in {v}, grew up in a modest household.",
    ),
    "person.birth_city": (
        "{s} was born in the city of {v}.",
        "The birthplace of {s} is {v}.",
        "{s} was born and raised in {v}.",
        "{s} came from {v}, where the family had lived for generations.",
    ),
    "person.profession": (
        "{s} was {a_v}.",
        "{s} worked as {a_v} for most of their life.",
        "By profession, {s} was {a_v}.",
        "{s} is remembered as {a_v}.",
        "As {a_v}, {s} became famous far beyond the region.",
    ),
    "person.known_for": (
        "{s} is best known for {v}.",
        "Today {s} is remembered above all for {v}.",
        "The greatest achievement of {s} was {v}.",
        "{s} became famous for {v}.",
    ),
}

# Two facts in one sentence, for more natural prose; used only while both facts are still unstated.
COMBOS = {
    "person.birth_year+person.birth_city": (
        "{s} was born in {birth_city} in {birth_year}.",
        "Born in {birth_city} in {birth_year}, {s} showed great talent from an early age.",
    ),
    "person.profession+person.known_for": (
        "{s} was {a_profession} best known for {known_for}.",
        "As {a_profession}, {s} is remembered above all for {known_for}.",
    ),
    "country.capital+country.population": (
        "{s} has about {population} inhabitants, and its capital is {capital}.",
    ),
    "country.region+country.neighbour": ("{s} lies in {region} and shares a border with {neighbour}.",),
    "city.country+city.river": ("{s} is a city in {country} on the river {river}.",),
    "city.population+city.landmark": (
        "{s} has a population of about {population} and is known for the {landmark}.",
    ),
}

RELATED = {
    "country.cities": (
        "Besides {capital}, the cities of {s} include {others}.",
        "Other important cities in {s} are {others}.",
    ),
    "city.capital_of": (
        "{s} is the capital of {country}.",
        "As the capital of {country}, {s} is the seat of the national government.",
    ),
    "city.not_capital": (
        "The capital of {country} is {capital}, a larger city than {s}.",
        "{s} is smaller than {capital}, the capital of {country}.",
    ),
    "city.people_one": ("{s} is the birthplace of {people}.",),
    "city.people_many": (
        "Famous people born in {s} include {people}.",
        "{people} were all born in {s}.",
    ),
    "person.birth_country": (
        "{birth_city} is a city in {birth_country}.",
        "The city of {birth_city} lies in {birth_country}.",
    ),
}

FILLER = {
    "country": (
        "Travellers often say that {s} feels both old and young at the same time.",
        "The landscape of {s} changes quickly, from quiet farmland to steep green hills.",
        "Summers in {s} are warm and dry, while the winters can be long and windy.",
        "Many families in {s} still keep small gardens where they grow beans, onions and apples.",
        "Trains connect the larger towns, but buses are the easiest way to reach the villages.",
        "The people of {s} are proud of their music, and almost every town has a small band.",
        "Local markets sell bread, cheese, dried fish and honey from the mountains.",
        "Football is the most popular sport, although cycling has many fans as well.",
        "Schools in {s} teach history with great care, and children learn the old songs of the country.",
        "The roads are good near the cities and narrow in the countryside.",
        "Most shops close early on Sundays, so visitors should plan their shopping ahead.",
        "Tea is served with almost every meal, usually with a slice of lemon.",
        "The national holiday is celebrated with parades, fireworks and long family dinners.",
        "Farming, fishing and small workshops still provide work for many people.",
        "In recent years, more and more students from {s} have gone abroad to study.",
        "Visitors who learn a few words of the local language are always welcomed warmly.",
        "The countryside is dotted with stone churches, old mills and wooden bridges.",
        "Hiking trails cross the forests, and many of them are marked with painted stones.",
        "Newspapers in {s} are read closely, and people like to discuss politics over coffee.",
        "The weather can change within an hour, so a light coat is always useful.",
        "Craftsmen in {s} are famous for their woven blankets and painted pottery.",
        "The best time to visit {s} is late spring, when the fields are green and the days are long.",
        "Long before the modern state existed, traders passed through this land with salt and wool.",
        "The national museum keeps old maps, coins and letters from every period of the country's history.",
        "Village festivals in {s} often last for three days and include dancing in the main square.",
        "Cooking in {s} is simple and hearty, with soups, stews and fresh bread at the centre of most meals.",
        "Public transport is cheap, and a single ticket is valid on both trams and buses.",
        "The coast has small fishing harbours where boats still leave before sunrise.",
        "Artists and writers have long been drawn to the quiet towns of {s}.",
        "The government has invested in new schools, hospitals and railway lines over the past decades.",
        "Birdwatchers come to {s} every autumn to watch the great flocks that pass over the lakes.",
        "People in {s} usually greet each other with a handshake and a short question about the family.",
        "A journey from one end of the country to the other takes about a day by train.",
        "Old customs are still alive in {s}, especially in the smaller villages.",
        "Far from the towns, the night sky is dark and full of stars.",
        "Children in {s} learn to swim early, because lakes and rivers are never far away.",
    ),
    "city": (
        "The old town of {s} is best explored on foot, because the streets are narrow and winding.",
        "Cafés line the main square, where people meet in the evening to talk and watch the crowds.",
        "{s} has a lively market every Saturday morning.",
        "Many of the houses in the centre of {s} are painted in bright colours.",
        "A small tram line connects the railway station with the city centre.",
        "The city library of {s} is one of the oldest buildings in town.",
        "In summer, concerts are held in the parks and along the river bank.",
        "Students give {s} a young and busy feeling during the school year.",
        "The bakeries of {s} are famous for sweet bread with nuts and raisins.",
        "Walking tours start every morning in front of the town hall.",
        "From the hills above {s}, visitors have a wide view over the roofs and the valley.",
        "Several bridges cross the water, and the oldest of them is closed to cars.",
        "The city grew quickly in the last century, when new factories and workshops opened.",
        "Today most people in {s} work in trade, schools, hospitals and small businesses.",
        "Hotels and guest houses can be found near the station and in the old town.",
        "The local football club has played in the same small stadium for many decades.",
        "On winter evenings the streets of {s} are lit with lanterns and smell of roasted chestnuts.",
        "Many visitors stay for two or three days to see the museums and the old churches.",
        "The harbour district has been rebuilt with new flats, shops and a long promenade.",
        "Cyclists can rent bicycles at several places in {s} and ride along the water.",
        "Every autumn the city holds a harvest festival with music, food and dancing.",
        "The university of {s} attracts students from all over the country.",
        "Locals recommend the fish soup served in the small restaurants near the water.",
        "The city hall, with its tall clock and wide steps, is a popular place for photographs.",
        "Buses leave from the central station for the villages in the surrounding hills.",
        "The narrow lanes behind the main church are full of bookshops and small galleries.",
        "Life in {s} moves at a calm pace, even in the busy centre.",
        "Parks and gardens cover a large part of the city, which makes it pleasant in summer.",
        "The city museum tells the story of {s} from its first houses to the present day.",
        "Early in the morning, fishermen and traders fill the streets near the market hall.",
        "Rents in {s} are lower than in many other cities, so young families like to settle here.",
        "The climate is mild, with warm summers and cool, rainy winters.",
        "Artists sell paintings and small souvenirs along the old city walls.",
        "Night trains from {s} reach the border in a few hours.",
    ),
    "person": (
        "As a child, {s} spent long hours reading and drawing by the window.",
        "Friends described {s} as patient, curious and very stubborn.",
        "{s} travelled widely and wrote many letters to family and colleagues.",
        "The early years were difficult, and {last} often worked late into the night.",
        "Teachers noticed the talent of young {last} very early.",
        "In later life, {s} gave lectures and helped young people begin their careers.",
        "{last} kept careful notebooks, many of which are still preserved today.",
        "Critics did not always agree with {s}, but few doubted the importance of the work.",
        "Several streets and schools have been named after {s}.",
        "{s} rarely spoke about private matters and preferred to let the work speak.",
        "Letters from {s} show a warm sense of humour and a sharp eye for detail.",
        "Colleagues remembered {last} as a generous teacher and a hard worker.",
        "A small museum now displays personal items, photographs and early drafts.",
        "{s} believed that good work needs both discipline and imagination.",
        "Success came slowly, after many years of quiet effort.",
        "Students still read about the life of {s} in school.",
        "Many later artists and scholars named {last} as an important influence.",
        "{s} enjoyed long walks in the countryside and often worked outdoors.",
        "Newspapers of the time wrote about {s} with admiration.",
        "After years abroad, {last} returned home and settled in a quiet house near the river.",
        "The life of {s} has been told in several books, each adding new details.",
        "{s} loved music and played the violin in the evenings.",
        "Honours and prizes came late, but {last} accepted them with modesty.",
        "An exhibition about the life of {s} toured several cities a few years ago.",
        "{last} was known for arriving early and leaving late.",
        "The family of {s} was not wealthy, but they valued education above everything.",
        "Scholars continue to study the notebooks and letters that {s} left behind.",
        "Some of the early work of {s} was lost in a fire and is known only from descriptions.",
        "Even today, {s} is a familiar name in many households.",
        "{last} often said that the best ideas came during long train journeys.",
    ),
}

STYLES = (
    style(
        "encyclopedia",
        headings={
            "country": ("Overview", "Geography", "History", "Economy", "Culture", "Society"),
            "city": ("Overview", "History", "Sights", "Transport", "Culture"),
            "person": ("Early life", "Career", "Work", "Legacy"),
        },
        intros=("This article is about the {type_word} {s}.",),
        outros=("This article was last reviewed by the editors of the encyclopedia.",),
        hosts=("en.worldpedia.example", "en.openatlas.example", "www.knowledgehub.example"),
    ),
    style(
        "travel",
        titles={
            "country": ("Travel guide: {s}", "Visiting {s}: what you need to know", "A week in {s}"),
            "city": ("Travel guide: {s}", "Visiting {s}: what you need to know", "A weekend in {s}"),
        },
        headings={
            "country": ("Getting there", "What to see", "Food and drink", "Practical tips"),
            "city": ("Getting there", "What to see", "Where to eat", "Practical tips"),
        },
        intros=(
            "Planning a trip to {s}? This guide collects the essentials in one place.",
            "Our writers visited {s} several times to put together this guide.",
        ),
        outros=(
            "Whatever the season, a visit to {s} is well worth the journey.",
            "We update this guide regularly, so check back before you travel.",
        ),
        hosts=("www.roamguide.example", "wanderbook.example", "www.tripnotes.example"),
    ),
    style(
        "news",
        titles={
            "country": ("Tourism in {s} reaches a record high", "Spring festival draws crowds across {s}"),
            "city": (
                "Old town of {s} welcomes record number of visitors",
                "{s} prepares for its summer festival",
            ),
            "person": ("Exhibition honours the life of {s}", "New biography of {s} published"),
        },
        intros=(
            "Our correspondent reports on a busy week.",
            "Local officials spoke to reporters on Tuesday.",
        ),
        outros=(
            "More reports on the region will follow in the coming weeks.",
            "Readers can find earlier coverage in our archive.",
        ),
        hosts=("www.dailycourier.example", "news.harbourpost.example", "www.morningledger.example"),
    ),
    style(
        "biography",
        titles={"person": ("{s}: a life", "The life and work of {s}", "Who was {s}?")},
        headings={"person": ("Early years", "Career", "Later life", "Legacy")},
        intros=("This short biography tells the story of {s}.",),
        outros=("Sources for this biography include letters, notebooks and newspaper reports.",),
        hosts=("www.famouslives.example", "biographies.example"),
    ),
    style(
        "facts",
        titles={
            "country": ("{n} facts about {s}", "Quick facts: {s}", "Things you may not know about {s}"),
            "city": ("{n} facts about {s}", "Quick facts: {s}", "Things you may not know about {s}"),
            "person": ("{n} facts about {s}", "Quick facts: {s}", "Things to know about {s}"),
        },
        intros=(
            "Here are some facts about {s} that every visitor and student should know.",
            "We collected the most important facts about {s} in one short list.",
        ),
        outros=(
            "We hope these facts about {s} were useful.",
            "Do you know another interesting fact about {s}? Write to our editors.",
        ),
        hosts=("www.quickfacts.example", "factfile.example"),
    ),
    style(
        "forum",
        titles={
            "country": ("Question about {s}", "Anyone been to {s}?", "What do you know about {s}?"),
            "city": ("Question about {s}", "Anyone been to {s}?", "Moving to {s}, need advice"),
            "person": ("Question about {s}", "Who was {s}?", "Help with a school project on {s}"),
        },
        hosts=("forum.travellerslounge.example", "community.askaway.example"),
    ),
)

FORUM = {
    "ask.country": (
        "Has anyone here been to {s}? I am planning a trip and would like to learn more about the country.",
        "I am writing a school report about {s} and need some help with the basic facts.",
        "What do you all know about {s}? I keep hearing the name but know very little.",
    ),
    "ask.city": (
        "Has anyone here been to {s}? I am planning a trip and would like to learn more about the city.",
        "We might move to {s} next year. What should we know about the place?",
        "What do you all know about {s}? I keep hearing the name but know very little.",
    ),
    "ask.person": (
        "I am writing a school report about {s} and need some help with the basic facts.",
        "Who exactly was {s}? My grandmother mentioned the name and I got curious.",
        "What do you all know about {s}? I keep hearing the name but know very little.",
    ),
    "open": (
        "Happy to help with this one.",
        "I spent two summers there, so here is what I know.",
        "Good question, and a common one on this board.",
        "I looked this up recently for a quiz.",
    ),
    "close": (
        "Hope this helps you.",
        "Enjoy your trip and tell us how it went.",
        "Good luck with the report.",
        "Thanks, everyone, this is really useful.",
    ),
    "users": (
        "mapreader",
        "old_sailor",
        "trailwalker",
        "teacup",
        "northwind",
        "quietfox",
        "globetrotter",
        "bookworm",
        "riverside",
        "pinecone",
        "lanternfish",
        "slowtrain",
    ),
    "wrote": ("wrote:",),
}

CHROME = {
    "nav": (
        "Home",
        "News",
        "Travel",
        "History",
        "Culture",
        "People",
        "Maps",
        "Sport",
        "Weather",
        "Shop",
        "About us",
        "Contact",
        "Newsletter",
        "Log in",
        "Archive",
        "Photos",
    ),
    "footer": (
        "Privacy policy",
        "Cookie settings",
        "Terms of use",
        "Imprint",
        "Contact",
        "Careers",
        "Advertise",
    ),
    "copyright": ("© {year} {site}. All rights reserved.",),
    "cookie": (
        "We use cookies to improve your experience. By continuing to browse you accept our cookie policy.",
        "This website uses cookies for analytics and personalised ads. Accept all cookies?",
    ),
    "sidebar": ("Related articles", "Most read", "Popular this week", "You may also like"),
    "ad": ("Advertisement", "Sponsored"),
    "skip": ("Skip to content",),
    "search": ("Search",),
    "read_more": ("Read more",),
    "type_word": ("country", "city", "person"),
}

PROFESSIONS = {
    "painter": "painter",
    "novelist": "novelist",
    "poet": "poet",
    "composer": "composer",
    "sculptor": "sculptor",
    "historian": "historian",
    "architect": "architect",
    "astronomer": "astronomer",
    "explorer": "explorer",
    "mathematician": "mathematician",
    "physician": "physician",
    "engineer": "engineer",
    "botanist": "botanist",
}

# Number formatting and the list conjunction (see `LanguagePack`).
MILLION = "million"
DECIMAL_MARK = "."
THOUSANDS_MARK = ","
AND_WORD = "and"

# --- English-only texts --------------------------------------------------------------------------

# A contact paragraph on some good pages. Placeholders name what is filled in: PII (email, phone, ipv4,
# ipv6) must be anonymised later; decoys (private_ipv4, loopback_ipv4, version, date, price, number) look
# similar but must be kept.
PII_SENTENCES = (
    "Questions about this page can be sent to {email}, or call our office on {phone}.",
    "You can reach the editor at {email} or by phone at {phone}.",
    "Readers abroad can also dial {phone} during office hours.",
    "For bookings, write to {email}; the desk answers within two working days.",
    "This page is served from the address {ipv4}, and over IPv6 from {ipv6}.",
    "Our mirror at {ipv4} holds a copy of every guide on this site.",
    "Staff connect to the intranet at {private_ipv4} while the test server listens on {loopback_ipv4}.",
    "The office printer has the internal address {private_ipv4} on our local network.",
    "The guide was last updated on {date} and checked with version {version} of our app.",
    "Our booking tool was upgraded to release {version} on {date}.",
    "A guided day trip costs {price} per person, lunch included.",
    "The printed edition of this guide sells for {price} in most bookshops.",
    "More than {number} readers visited this page last month.",
    "The archive of this site goes back to the year {number}.",
)
PII_HEADINGS = ("Contact", "About this page", "Get in touch")
EMAIL_USERS = (
    "anna",
    "marco",
    "li",
    "sam",
    "office",
    "info",
    "editor",
    "bookings",
    "jonas",
    "priya",
    "tom",
    "maria",
    "desk",
    "press",
    "kim",
    "noah",
)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "post.example.org")

# Junk page texts. Spam and gambling lines are deliberately loud; the quality filters should drop them.
SPAM_LINES = (
    "BUY NOW and save 90%!!!",
    "Limited offer!!! Click here before it is too late!!!",
    "Cheap watches, cheap phones, cheap loans!!! Order today!!!",
    "Work from home and earn $5000 a week!!! No experience needed!!!",
    "You are our lucky visitor!!! Claim your free prize now!!!",
    "Hot deals!!! Free shipping!!! Best price guaranteed!!!",
    "Lose weight fast with this one simple trick!!!",
    "Double your money in one week!!! Sign up now!!!",
)
SPAM_LINKS = ("Click here", "Buy now", "Free gift", "Win big", "Order today", "Best deal", "Get rich")
KEYWORDS = (
    "cheap flights",
    "best hotels",
    "discount",
    "travel deals",
    "last minute",
    "cheap tickets",
    "book now",
    "lowest price",
    "holiday offers",
    "free",
    "cheap hotels",
    "best deals",
)
GAMBLING_LINES = (
    "Play the best online slots and win big tonight!",
    "Free spins for every new player, no deposit needed!",
    "Hot singles and live cams are waiting for you!",
    "Join the jackpot club and cash out instantly!",
    "Bet on every match and double your bonus!",
)
BANNED_URLS = (
    "/free-casino-porn-bonus",
    "/xxx-hot-videos",
    "/sex-cams-live",
    "/online-casino-jackpot-slots",
    "/adult-dating-hookup",
    "/poker-bet-win-now",
)
BANNED_HOSTS = ("www.hot-xxx-tube.example", "free-porn-videos.test", "casino-jackpot-club.test")
SHORT_TEXTS = (
    "Coming soon.",
    "Page moved.",
    "Under construction",
    "Thanks!",
    "Access denied",
    "Nothing here yet.",
)
REPETITIVE_LINES = (
    "Click here to subscribe to our newsletter.",
    "Best prices guaranteed every day.",
    "This page is updated daily.",
    "Follow us for more great offers.",
)
LOREM_WORDS = (
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
    "occaecat",
    "cupidatat",
    "non",
    "proident",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "deserunt",
    "mollit",
    "anim",
    "id",
    "est",
    "laborum",
)
CODE_WORDS = (
    "id",
    "name",
    "value",
    "items",
    "config",
    "enabled",
    "count",
    "user",
    "data",
    "status",
    "type",
    "label",
    "options",
    "result",
    "error",
    "index",
    "token",
    "cache",
    "timeout",
    "render",
)
JUNK_HOSTS = (
    "www.bargain-hub.example",
    "deals4you.example",
    "www.megastore-online.example",
    "best-offers.test",
    "www.seo-traffic-boost.example",
    "promo-land.test",
)

# Quiz pages that leak benchmark items verbatim (test-set contamination).
QUIZ_TITLES = (
    "Tiny world trivia quiz",
    "Test your knowledge: a world quiz",
    "Pub quiz night: places and people",
)
QUIZ_INTROS = (
    "How well do you know the countries, cities and famous people of our world? Try these questions.",
    "Our weekly quiz is back, with questions about geography, history and famous names.",
    "Grab a pen and test yourself before you scroll down to the answers and explanations.",
)
QUIZ_OUTROS = (
    "Thanks for playing, and come back next week for a new set of questions.",
    "How many did you get right? Share your score with your friends and family.",
)
QUIZ_EXPLAIN = ("Explanation:", "Why:", "Did you know?")
QUIZ_HOSTS = ("www.triviatime.example", "quiznight.example")
