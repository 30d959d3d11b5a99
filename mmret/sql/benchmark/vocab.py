"""Value vocabularies of the embedded benchmark: canonical cell values and the surface
forms a question might use instead (abbreviations, synonyms), all real-world spellings.

Each entry maps a canonical value to ``{"abbreviation": [...], "synonym": [...]}``;
an empty list means the value has no such form (no variant of that kind is made).
"""

from __future__ import annotations

#: country -> alternative forms
COUNTRIES: dict[str, dict[str, list[str]]] = {
    "United States": {"abbreviation": ["USA", "US"], "synonym": ["America"]},
    "United Kingdom": {"abbreviation": ["UK"], "synonym": ["Britain", "Great Britain"]},
    "Germany": {"abbreviation": ["GER"], "synonym": ["Deutschland"]},
    "France": {"abbreviation": ["FRA"], "synonym": ["French Republic"]},
    "Netherlands": {"abbreviation": ["NL"], "synonym": ["Holland"]},
    "South Korea": {"abbreviation": ["ROK", "S. Korea"], "synonym": ["Republic of Korea"]},
    "Japan": {"abbreviation": ["JPN"], "synonym": ["Nippon"]},
    "Brazil": {"abbreviation": ["BRA"], "synonym": ["Brasil"]},
    "Canada": {"abbreviation": ["CAN"], "synonym": []},
    "Australia": {"abbreviation": ["AUS"], "synonym": ["Oz"]},
    "Spain": {"abbreviation": ["ESP"], "synonym": ["España"]},
    "Italy": {"abbreviation": ["ITA"], "synonym": ["Italia"]},
    "Sweden": {"abbreviation": ["SWE"], "synonym": ["Sverige"]},
    "Mexico": {"abbreviation": ["MEX"], "synonym": ["México"]},
    "Argentina": {"abbreviation": ["ARG"], "synonym": []},
    "Ireland": {"abbreviation": ["IRL"], "synonym": ["Eire"]},
    "Norway": {"abbreviation": ["NOR"], "synonym": ["Norge"]},
    "New Zealand": {"abbreviation": ["NZ"], "synonym": ["Aotearoa"]},
    "South Africa": {"abbreviation": ["RSA", "SA"], "synonym": []},
    "Switzerland": {"abbreviation": ["SUI", "CH"], "synonym": ["Swiss Confederation"]},
    "Austria": {"abbreviation": ["AUT"], "synonym": ["Österreich"]},
    "Czech Republic": {"abbreviation": ["CZE"], "synonym": ["Czechia"]},
}

#: city -> (country, population, alternative forms)
CITIES: dict[str, tuple[str, int, dict[str, list[str]]]] = {
    "New York City": ("United States", 8336817, {"abbreviation": ["NYC"], "synonym": ["The Big Apple"]}),
    "Los Angeles": ("United States", 3898747, {"abbreviation": ["LA"], "synonym": ["City of Angels"]}),
    "San Francisco": ("United States", 873965, {"abbreviation": ["SF"], "synonym": ["Frisco"]}),
    "Chicago": ("United States", 2746388, {"abbreviation": ["CHI"], "synonym": ["The Windy City"]}),
    "Philadelphia": ("United States", 1603797, {"abbreviation": ["Philly"], "synonym": ["City of Brotherly Love"]}),
    "Las Vegas": ("United States", 641903, {"abbreviation": ["Vegas"], "synonym": ["Sin City"]}),
    "New Orleans": ("United States", 383997, {"abbreviation": ["NOLA"], "synonym": ["The Big Easy"]}),
    "London": ("United Kingdom", 8799800, {"abbreviation": ["LDN"], "synonym": ["Londinium"]}),
    "Manchester": ("United Kingdom", 552858, {"abbreviation": ["MCR"], "synonym": []}),
    "Paris": ("France", 2102650, {"abbreviation": [], "synonym": ["City of Light"]}),
    "Rome": ("Italy", 2860009, {"abbreviation": [], "synonym": ["Roma", "The Eternal City"]}),
    "Milan": ("Italy", 1371498, {"abbreviation": [], "synonym": ["Milano"]}),
    "Florence": ("Italy", 367150, {"abbreviation": [], "synonym": ["Firenze"]}),
    "Amsterdam": ("Netherlands", 921402, {"abbreviation": ["AMS"], "synonym": []}),
    "Berlin": ("Germany", 3677472, {"abbreviation": ["BER"], "synonym": []}),
    "Munich": ("Germany", 1487708, {"abbreviation": [], "synonym": ["München"]}),
    "Cologne": ("Germany", 1073096, {"abbreviation": [], "synonym": ["Köln"]}),
    "Vienna": ("Austria", 1931593, {"abbreviation": [], "synonym": ["Wien"]}),
    "Prague": ("Czech Republic", 1357326, {"abbreviation": [], "synonym": ["Praha"]}),
    "Tokyo": ("Japan", 13960236, {"abbreviation": ["TYO"], "synonym": []}),
    "Osaka": ("Japan", 2752412, {"abbreviation": [], "synonym": []}),
    "Seoul": ("South Korea", 9586195, {"abbreviation": [], "synonym": []}),
    "Rio de Janeiro": ("Brazil", 6747815, {"abbreviation": ["Rio"], "synonym": []}),
    "Sao Paulo": ("Brazil", 12325232, {"abbreviation": ["SP"], "synonym": ["Sampa"]}),
    "Mexico City": ("Mexico", 9209944, {"abbreviation": ["CDMX"], "synonym": []}),
    "Buenos Aires": ("Argentina", 3075646, {"abbreviation": ["BA"], "synonym": []}),
    "Sydney": ("Australia", 5361466, {"abbreviation": ["SYD"], "synonym": []}),
    "Melbourne": ("Australia", 5078193, {"abbreviation": ["MEL"], "synonym": []}),
    "Toronto": ("Canada", 2794356, {"abbreviation": ["TO"], "synonym": ["The Six"]}),
    "Montreal": ("Canada", 1762949, {"abbreviation": ["MTL"], "synonym": []}),
    "Dublin": ("Ireland", 592713, {"abbreviation": [], "synonym": ["Baile Atha Cliath"]}),
    "Stockholm": ("Sweden", 984748, {"abbreviation": [], "synonym": []}),
    "Oslo": ("Norway", 709037, {"abbreviation": [], "synonym": []}),
    "Madrid": ("Spain", 3305408, {"abbreviation": [], "synonym": []}),
    "Barcelona": ("Spain", 1636762, {"abbreviation": ["BCN"], "synonym": []}),
    "Zurich": ("Switzerland", 421878, {"abbreviation": ["ZRH"], "synonym": ["Zürich"]}),
    "Auckland": ("New Zealand", 1463000, {"abbreviation": ["AKL"], "synonym": []}),
    "Cape Town": ("South Africa", 4710000, {"abbreviation": ["CPT"], "synonym": ["Mother City"]}),
    "Johannesburg": ("South Africa", 5635127, {"abbreviation": ["Joburg", "JHB"], "synonym": ["Egoli"]}),
}

GENRES: dict[str, dict[str, list[str]]] = {
    "Rock": {"abbreviation": [], "synonym": ["Rock and Roll"]},
    "Pop": {"abbreviation": [], "synonym": ["Popular Music"]},
    "Jazz": {"abbreviation": [], "synonym": []},
    "Hip Hop": {"abbreviation": ["HH"], "synonym": ["Rap"]},
    "Rhythm and Blues": {"abbreviation": ["R&B", "RnB"], "synonym": ["Soul"]},
    "Electronic Dance Music": {"abbreviation": ["EDM"], "synonym": ["Dance"]},
    "Classical": {"abbreviation": [], "synonym": ["Orchestral"]},
    "Heavy Metal": {"abbreviation": ["Metal"], "synonym": []},
    "Folk": {"abbreviation": [], "synonym": ["Traditional"]},
    "Reggae": {"abbreviation": [], "synonym": []},
    "Country": {"abbreviation": [], "synonym": ["Country and Western"]},
    "Drum and Bass": {"abbreviation": ["DnB", "D&B"], "synonym": ["Jungle"]},
}

CATEGORIES: dict[str, dict[str, list[str]]] = {
    "Television": {"abbreviation": ["TV"], "synonym": ["Telly"]},
    "Mobile Phone": {"abbreviation": ["Phone"], "synonym": ["Cell Phone", "Smartphone"]},
    "Laptop Computer": {"abbreviation": ["Laptop"], "synonym": ["Notebook"]},
    "Headphones": {"abbreviation": [], "synonym": ["Earphones", "Headset"]},
    "Refrigerator": {"abbreviation": ["Fridge"], "synonym": ["Icebox"]},
    "Sofa": {"abbreviation": [], "synonym": ["Couch", "Settee"]},
    "Bicycle": {"abbreviation": ["Bike"], "synonym": ["Cycle"]},
    "Vacuum Cleaner": {"abbreviation": ["Vacuum"], "synonym": ["Hoover"]},
    "Personal Computer": {"abbreviation": ["PC"], "synonym": ["Desktop"]},
    "Washing Machine": {"abbreviation": ["Washer"], "synonym": []},
    "Microwave Oven": {"abbreviation": ["Microwave"], "synonym": []},
    "Coffee Maker": {"abbreviation": [], "synonym": ["Coffee Machine"]},
}

BRANDS = ["Acme", "Northwind", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark",
          "Wayne", "Tyrell", "Cyberdyne", "Soylent", "Aperture", "Wonka", "Gringotts"]

STATES: dict[str, dict[str, list[str]]] = {
    "California": {"abbreviation": ["CA", "Calif."], "synonym": ["Golden State"]},
    "Texas": {"abbreviation": ["TX", "Tex."], "synonym": ["Lone Star State"]},
    "New York": {"abbreviation": ["NY"], "synonym": ["Empire State"]},
    "Florida": {"abbreviation": ["FL", "Fla."], "synonym": ["Sunshine State"]},
    "Illinois": {"abbreviation": ["IL", "Ill."], "synonym": ["Prairie State"]},
    "Pennsylvania": {"abbreviation": ["PA", "Penn."], "synonym": ["Keystone State"]},
    "Massachusetts": {"abbreviation": ["MA", "Mass."], "synonym": ["Bay State"]},
    "Washington": {"abbreviation": ["WA", "Wash."], "synonym": ["Evergreen State"]},
    "Georgia": {"abbreviation": ["GA"], "synonym": ["Peach State"]},
    "Colorado": {"abbreviation": ["CO", "Colo."], "synonym": ["Centennial State"]},
    "Arizona": {"abbreviation": ["AZ", "Ariz."], "synonym": ["Grand Canyon State"]},
    "Oregon": {"abbreviation": ["OR", "Ore."], "synonym": ["Beaver State"]},
}

SPECIALTIES: dict[str, dict[str, list[str]]] = {
    "Cardiology": {"abbreviation": ["Cardio"], "synonym": ["Heart Medicine"]},
    "Dermatology": {"abbreviation": ["Derm"], "synonym": ["Skin Care"]},
    "Pediatrics": {"abbreviation": ["Peds"], "synonym": ["Paediatrics", "Child Medicine"]},
    "Obstetrics and Gynecology": {"abbreviation": ["OB/GYN", "OBGYN"], "synonym": ["Women's Health"]},
    "Otorhinolaryngology": {"abbreviation": ["ENT"], "synonym": ["Ear, Nose and Throat"]},
    "Emergency Medicine": {"abbreviation": ["EM", "ER"], "synonym": ["Accident and Emergency"]},
    "Orthopedics": {"abbreviation": ["Ortho"], "synonym": ["Bone Surgery"]},
    "Neurology": {"abbreviation": ["Neuro"], "synonym": ["Brain Medicine"]},
    "Ophthalmology": {"abbreviation": ["Ophtho"], "synonym": ["Eye Care"]},
    "Psychiatry": {"abbreviation": ["Psych"], "synonym": ["Mental Health"]},
    "Oncology": {"abbreviation": ["Onc"], "synonym": ["Cancer Care"]},
    "General Practice": {"abbreviation": ["GP"], "synonym": ["Family Medicine"]},
}

INSURERS = ["Aetna", "Cigna", "Humana", "Kaiser Permanente", "Blue Cross", "UnitedHealthcare",
            "Anthem", "Molina"]

#: ICD-10 codes with their descriptions (a real subset)
DIAGNOSES = {
    "J45.909": "Asthma, uncomplicated", "E11.9": "Type 2 diabetes without complications",
    "I10": "Essential hypertension", "J06.9": "Acute upper respiratory infection",
    "M54.5": "Low back pain", "K21.9": "Gastro-oesophageal reflux disease",
    "F41.1": "Generalized anxiety disorder", "L20.9": "Atopic dermatitis",
    "H10.9": "Conjunctivitis", "S93.401": "Sprain of ankle ligament",
    "R51.9": "Headache", "N39.0": "Urinary tract infection", "B34.9": "Viral infection",
    "E78.5": "Hyperlipidemia", "G43.909": "Migraine", "C50.919": "Breast cancer",
}

FIRST_NAMES = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda",
               "David", "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph",
               "Jessica", "Thomas", "Sarah", "Carlos", "Karen", "Wei", "Yuki", "Priya",
               "Ahmed", "Olga", "Lars", "Sofia", "Mateo", "Chloe", "Hiroshi", "Amara",
               "Liam", "Emma", "Noah", "Olivia", "Lucas", "Mia", "Ethan", "Ava", "Jonas",
               "Ingrid", "Pierre", "Camille", "Giulia", "Marco", "Ana", "Diego", "Fatima",
               "Kwame", "Aisha"]
LAST_NAMES = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
              "Rodriguez", "Martinez", "Hernandez", "Lopez", "Wilson", "Anderson", "Taylor",
              "Thomas", "Moore", "Jackson", "Martin", "Lee", "Thompson", "White", "Harris",
              "Clark", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
              "Scott", "Nguyen", "Kim", "Tanaka", "Muller", "Schmidt", "Dubois", "Rossi",
              "Silva", "Santos", "Novak", "Johansson", "Hansen", "Okafor", "Mensah", "Patel",
              "Singh", "Chen", "Wang"]
BAND_WORDS = ["Electric", "Velvet", "Midnight", "Crimson", "Silver", "Neon", "Wild", "Golden",
              "Broken", "Lunar", "Iron", "Paper", "Glass", "Echo", "Static", "Fading"]
BAND_NOUNS = ["Owls", "Horizon", "Tides", "Foxes", "Machines", "Pilots", "Kings", "Rivers",
              "Lights", "Ghosts", "Wolves", "Dreams", "Parade", "Engines", "Sparrows"]
VENUE_WORDS = ["Arena", "Hall", "Theatre", "Stadium", "Club", "Pavilion", "Center", "Dome"]
