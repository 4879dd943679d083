"""The world's vocabulary: role families, titles per seniority, skills and synonyms, degree
fields, companies and cities.

Both the fit policy (:mod:`lantern_batch.policy`, which reads titles, skills, degree fields and
cities) and the synthetic world (:mod:`lantern_batch.world`, which writes them) use these tables,
so what the generator writes is exactly what the policy understands. Pure Python, no imports
beyond the standard library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from lantern_batch.schema import SENIORITY_LEVELS

SENIORITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SENIORITY_LEVELS)}

#: Years of experience a role at each seniority expects (the minimum the policy checks).
MIN_YEARS: dict[str, float] = {
    "intern": 0, "entry": 0, "mid": 2, "senior": 5, "lead": 7, "manager": 6, "director": 10, "executive": 15,
}
#: Typical (low, high) years of members at each seniority, used by the generator.
YEARS_RANGE: dict[str, tuple[float, float]] = {
    "intern": (0, 1), "entry": (0, 2.5), "mid": (2, 6), "senior": (5, 10), "lead": (7, 13),
    "manager": (6, 14), "director": (10, 20), "executive": (15, 30),
}


@dataclass(frozen=True)
class RoleFamily:
    """A coherent kind of work: its titles per seniority, skills, degrees and employers."""

    name: str
    sector: str
    titles: dict[str, tuple[str, ...]]
    core_skills: tuple[str, ...]
    adjacent_skills: tuple[str, ...]
    degree_fields: tuple[str, ...]
    degree_required: bool
    companies: tuple[str, ...]
    queries: tuple[str, ...]
    duties: tuple[str, ...]
    related: tuple[str, ...] = field(default_factory=tuple)
    remote_share: float = 0.2
    """Share of this family's jobs that are remote (nurses and electricians rarely are)."""


def _titles(base: str, intern: str, entry: str, lead: str, manager: str, director: str, executive: str) -> dict[str, tuple[str, ...]]:
    return {
        "intern": (intern,),
        "entry": (entry,),
        "mid": (base,),
        "senior": (f"Senior {base}",),
        "lead": (lead,),
        "manager": (manager,),
        "director": (director,),
        "executive": (executive,),
    }


FAMILIES: tuple[RoleFamily, ...] = (
    RoleFamily(
        "software_engineering", "technology",
        _titles("Software Engineer", "Software Engineering Intern", "Junior Software Engineer",
                "Staff Software Engineer", "Engineering Manager", "Director of Engineering",
                "VP of Engineering"),
        ("Python", "Java", "JavaScript", "TypeScript", "SQL", "Git", "REST APIs", "System Design",
         "Unit Testing", "Go", "React", "Microservices", "PostgreSQL", "CI/CD"),
        ("Docker", "Kubernetes", "AWS", "Agile", "Linux", "Data Structures"),
        ("Computer Science", "Software Engineering", "Computer Engineering", "Mathematics"),
        True,
        ("Northwind Labs", "Brightpath Software", "Cobalt Systems", "Lumen Apps", "Tidewater Tech", "Quillstack"),
        ("software engineer", "backend developer", "python developer", "full stack engineer"),
        ("design, build and ship backend services used by millions of customers",
         "review code and mentor engineers on testing and design",
         "own features end to end, from design docs to production monitoring",
         "improve the reliability and latency of our core APIs",
         "work with product managers to turn requirements into shippable increments"),
        ("data_science", "cloud_infrastructure", "product_design"), 0.35,
    ),
    RoleFamily(
        "data_science", "technology",
        _titles("Data Scientist", "Data Science Intern", "Junior Data Analyst",
                "Lead Data Scientist", "Data Science Manager", "Director of Data Science",
                "Chief Data Officer"),
        ("Python", "SQL", "Machine Learning", "Statistics", "Pandas", "A/B Testing",
         "Data Visualization", "Scikit-learn", "Spark", "Deep Learning", "Tableau", "R"),
        ("Excel", "AWS", "Git", "Forecasting", "Airflow", "dbt"),
        ("Statistics", "Computer Science", "Mathematics", "Economics", "Data Science", "Physics"),
        True,
        ("Insightful Analytics", "Vantage Data", "Meridian AI", "Polaris Metrics", "Sparrow Labs"),
        ("data scientist", "machine learning engineer", "data analyst", "analytics"),
        ("build models that forecast demand and inform pricing decisions",
         "design and analyse A/B tests with product teams",
         "turn messy data into clear dashboards and recommendations for leadership",
         "partner with engineers to put models into production",
         "define metrics and maintain the core data pipelines"),
        ("software_engineering", "financial_analysis", "cloud_infrastructure"), 0.35,
    ),
    RoleFamily(
        "cloud_infrastructure", "technology",
        _titles("DevOps Engineer", "IT Support Intern", "Junior Systems Administrator",
                "Lead Site Reliability Engineer", "Infrastructure Manager", "Director of IT",
                "Chief Information Officer"),
        ("Linux", "AWS", "Kubernetes", "Docker", "Terraform", "CI/CD", "Networking", "Bash",
         "Monitoring", "Azure", "Ansible", "Incident Response"),
        ("Python", "Go", "Security", "SQL", "Git", "Active Directory"),
        ("Computer Science", "Information Technology", "Computer Engineering", "Network Engineering"),
        False,
        ("Stratus Cloud", "Ironclad Hosting", "Beacon Networks", "Skyforge", "Keystone IT"),
        ("devops engineer", "site reliability engineer", "cloud engineer", "systems administrator"),
        ("run and automate our cloud infrastructure across three regions",
         "own the on-call rotation and lead incident reviews",
         "build CI/CD pipelines that let teams deploy safely many times a day",
         "harden systems and manage access and patching",
         "plan capacity and keep cloud spend under control"),
        ("software_engineering", "data_science"), 0.35,
    ),
    RoleFamily(
        "product_design", "technology",
        _titles("Product Designer", "Design Intern", "Junior UX Designer",
                "Lead Product Designer", "Design Manager", "Director of Design",
                "VP of Design"),
        ("Figma", "User Research", "Prototyping", "Interaction Design", "Wireframing",
         "Design Systems", "Usability Testing", "Visual Design", "Accessibility"),
        ("HTML", "CSS", "Copywriting", "Adobe Creative Suite", "Agile", "Branding"),
        ("Graphic Design", "Human-Computer Interaction", "Psychology", "Fine Arts", "Industrial Design"),
        False,
        ("Canvas & Co", "Pixelwise", "Northwind Labs", "Loom Studio", "Brightpath Software"),
        ("product designer", "ux designer", "ui designer"),
        ("design flows for our mobile and web products from sketch to handoff",
         "run user interviews and usability tests and share what we learn",
         "maintain and grow our design system",
         "partner with engineers and product managers on scope and trade-offs"),
        ("software_engineering", "marketing"), 0.3,
    ),
    RoleFamily(
        "nursing", "healthcare",
        _titles("Registered Nurse", "Nursing Student Extern", "Graduate Nurse",
                "Charge Nurse", "Nurse Manager", "Director of Nursing",
                "Chief Nursing Officer"),
        ("Patient Care", "BLS", "EHR", "Medication Administration", "Patient Assessment",
         "IV Therapy", "ACLS", "Wound Care", "Care Planning", "Triage", "Infection Control"),
        ("Patient Education", "HIPAA", "Phlebotomy", "Case Management", "Scheduling"),
        ("Nursing", "Health Sciences", "Biology"),
        True,
        ("St. Mary's Health", "Riverside Medical Center", "Evergreen Hospital", "Unity Health Partners", "Lakeside Clinic"),
        ("registered nurse", "icu nurse", "nurse", "charge nurse"),
        ("deliver safe, compassionate care to a caseload of acute patients",
         "assess patients, administer medications and update care plans",
         "coordinate with physicians, pharmacists and families",
         "precept new graduate nurses and support quality programmes"),
        ("healthcare_administration",), 0.02,
    ),
    RoleFamily(
        "healthcare_administration", "healthcare",
        _titles("Healthcare Administrator", "Healthcare Administration Intern", "Medical Office Assistant",
                "Lead Practice Coordinator", "Practice Manager", "Director of Clinical Operations",
                "Hospital Chief Operating Officer"),
        ("HIPAA", "Medical Billing", "Scheduling", "EHR", "Medical Coding", "Patient Relations",
         "Compliance", "Insurance Verification", "Budgeting", "Staff Supervision"),
        ("Excel", "Case Management", "Patient Education", "Process Improvement", "Vendor Management"),
        ("Health Administration", "Public Health", "Business Administration", "Health Sciences"),
        False,
        ("Riverside Medical Center", "Unity Health Partners", "CarePoint Clinics", "Evergreen Hospital"),
        ("healthcare administrator", "practice manager", "medical office"),
        ("run the day-to-day operations of a busy outpatient practice",
         "own billing, coding and insurance workflows",
         "keep the practice compliant with HIPAA and payer rules",
         "supervise front-desk and scheduling staff"),
        ("nursing", "operations_logistics", "human_resources"), 0.1,
    ),
    RoleFamily(
        "accounting", "finance",
        _titles("Accountant", "Accounting Intern", "Staff Accountant",
                "Lead Accountant", "Accounting Manager", "Controller",
                "Chief Financial Officer"),
        ("GAAP", "Excel", "Reconciliation", "General Ledger", "Accounts Payable",
         "Accounts Receivable", "Month-End Close", "QuickBooks", "Tax Preparation", "Auditing",
         "NetSuite"),
        ("Financial Reporting", "SAP", "Budgeting", "SQL", "Payroll"),
        ("Accounting", "Finance", "Business Administration", "Economics"),
        True,
        ("Ledgerline", "Harbor & Finch LLP", "Summit Financial", "Oakridge Partners", "Crestview Bank"),
        ("accountant", "staff accountant", "accounting manager"),
        ("own the month-end close and balance sheet reconciliations",
         "prepare financial statements under GAAP",
         "support the annual audit and tax filings",
         "improve controls over payables and receivables"),
        ("financial_analysis",), 0.2,
    ),
    RoleFamily(
        "financial_analysis", "finance",
        _titles("Financial Analyst", "Finance Intern", "Junior Financial Analyst",
                "Lead Financial Analyst", "FP&A Manager", "Director of FP&A",
                "VP of Finance"),
        ("Financial Modeling", "Excel", "Forecasting", "Budgeting", "Financial Reporting",
         "Valuation", "Variance Analysis", "SQL", "PowerPoint", "Power BI"),
        ("GAAP", "Tableau", "Python", "SAP", "Data Visualization"),
        ("Finance", "Economics", "Accounting", "Mathematics", "Business Administration"),
        True,
        ("Summit Financial", "Crestview Bank", "Atlas Capital", "Oakridge Partners", "Meridian Insurance"),
        ("financial analyst", "fp&a", "finance analyst"),
        ("build the annual budget and monthly forecasts",
         "analyse variances and explain them to business leaders",
         "build models for pricing, investments and headcount",
         "prepare board and leadership reporting"),
        ("accounting", "data_science"), 0.25,
    ),
    RoleFamily(
        "sales", "sales",
        _titles("Account Executive", "Sales Intern", "Sales Development Representative",
                "Lead Account Executive", "Sales Manager", "Director of Sales",
                "Chief Revenue Officer"),
        ("CRM", "Prospecting", "Negotiation", "Pipeline Management", "Cold Calling",
         "Closing", "Salesforce", "Account Management", "Lead Generation", "Forecasting"),
        ("Presentation Skills", "Customer Success", "Marketing Automation", "Excel", "Contract Management"),
        ("Business Administration", "Marketing", "Communications"),
        False,
        ("Peakline SaaS", "Vector Supply", "Brightpath Software", "Harborview Media", "Atlas Capital"),
        ("account executive", "sales", "sales manager", "business development"),
        ("own a territory and grow it from first call to signed contract",
         "build pipeline through outbound prospecting and events",
         "run discovery calls and tailored product demos",
         "keep accurate forecasts in the CRM"),
        ("marketing",), 0.3,
    ),
    RoleFamily(
        "marketing", "marketing",
        _titles("Marketing Specialist", "Marketing Intern", "Marketing Coordinator",
                "Lead Marketing Strategist", "Marketing Manager", "Director of Marketing",
                "Chief Marketing Officer"),
        ("SEO", "Content Marketing", "Google Analytics", "Social Media", "Email Marketing",
         "Copywriting", "Campaign Management", "Marketing Automation", "Branding", "Paid Search"),
        ("CRM", "Data Visualization", "Adobe Creative Suite", "A/B Testing", "Public Relations"),
        ("Marketing", "Communications", "Journalism", "Business Administration"),
        False,
        ("Harborview Media", "Peakline SaaS", "Loom Studio", "Sunward Retail", "Canvas & Co"),
        ("marketing manager", "digital marketing", "content marketing", "seo specialist"),
        ("plan and run multi-channel campaigns from brief to results",
         "grow organic traffic through SEO and content",
         "own the email programme and marketing automation",
         "report on campaign performance and budget"),
        ("sales", "product_design"), 0.3,
    ),
    RoleFamily(
        "electrical_trades", "trades",
        _titles("Electrician", "Electrical Apprentice", "Apprentice Electrician",
                "Lead Electrician", "Electrical Supervisor", "Director of Facilities",
                "VP of Field Operations"),
        ("Electrical Wiring", "NEC Code", "Blueprint Reading", "Troubleshooting", "Conduit Bending",
         "OSHA Safety", "Motor Controls", "Power Tools", "PLC", "Panel Installation"),
        ("HVAC", "Preventive Maintenance", "Project Scheduling", "Estimating", "Welding"),
        ("Electrical Technology", "Electrical Engineering", "Construction Management"),
        False,
        ("Volt Brothers Electric", "Keystone Builders", "Summit Facilities", "Granite Construction Co"),
        ("electrician", "journeyman electrician", "electrical"),
        ("install and maintain wiring, panels and lighting on commercial sites",
         "read blueprints and plan runs to code",
         "troubleshoot faults on motors and control systems",
         "keep job sites safe and inspection-ready"),
        ("construction",), 0.0,
    ),
    RoleFamily(
        "construction", "trades",
        _titles("Construction Project Coordinator", "Construction Intern", "Assistant Site Coordinator",
                "Lead Site Superintendent", "Construction Manager", "Director of Construction",
                "VP of Construction"),
        ("Project Scheduling", "Blueprint Reading", "OSHA Safety", "Estimating",
         "Subcontractor Management", "Procore", "Budgeting", "Quality Control", "AutoCAD"),
        ("Electrical Wiring", "Vendor Management", "Contract Management", "Excel", "Preventive Maintenance"),
        ("Construction Management", "Civil Engineering", "Architecture"),
        False,
        ("Granite Construction Co", "Keystone Builders", "Ridgeway Homes", "Summit Facilities"),
        ("construction manager", "site superintendent", "project coordinator construction"),
        ("run schedules, budgets and subcontractors on commercial builds",
         "walk the site daily for safety and quality",
         "coordinate inspections and change orders with owners",
         "keep drawings, RFIs and submittals current"),
        ("electrical_trades", "operations_logistics"), 0.0,
    ),
    RoleFamily(
        "operations_logistics", "operations",
        _titles("Logistics Coordinator", "Operations Intern", "Operations Associate",
                "Lead Supply Chain Analyst", "Operations Manager", "Director of Operations",
                "Chief Operating Officer"),
        ("Supply Chain", "Inventory Management", "Excel", "ERP", "Logistics", "Vendor Management",
         "Process Improvement", "Lean", "Forecasting", "Warehouse Management"),
        ("SAP", "SQL", "Budgeting", "Contract Management", "Power BI"),
        ("Supply Chain Management", "Business Administration", "Industrial Engineering", "Operations Management"),
        False,
        ("Vector Supply", "Harbor Freightways", "Sunward Retail", "Northstar Distribution", "Ridgeway Homes"),
        ("logistics coordinator", "operations manager", "supply chain"),
        ("plan inbound and outbound shipments across our distribution network",
         "keep inventory accurate and stockouts low",
         "negotiate with carriers and vendors",
         "lead continuous improvement projects on the warehouse floor"),
        ("construction", "healthcare_administration", "financial_analysis"), 0.1,
    ),
    RoleFamily(
        "teaching", "education",
        _titles("Teacher", "Student Teacher", "Teaching Assistant",
                "Lead Teacher", "Assistant Principal", "Principal",
                "Superintendent"),
        ("Lesson Planning", "Classroom Management", "Curriculum Development", "Differentiated Instruction",
         "Student Assessment", "Special Education", "Google Classroom", "Parent Communication"),
        ("Public Speaking", "Coaching", "Copywriting", "Scheduling", "Data Visualization"),
        ("Education", "Mathematics", "English", "Biology", "History"),
        True,
        ("Maple Grove School District", "Lakeside Academy", "Northfield Charter Schools", "Brightminds Learning"),
        ("teacher", "math teacher", "elementary teacher"),
        ("plan and teach engaging lessons aligned with state standards",
         "assess students and adapt instruction to their needs",
         "keep families informed and involved",
         "collaborate with colleagues on curriculum"),
        ("human_resources",), 0.05,
    ),
    RoleFamily(
        "human_resources", "people",
        _titles("HR Generalist", "HR Intern", "HR Assistant",
                "Lead HR Business Partner", "HR Manager", "Director of People",
                "Chief People Officer"),
        ("Recruiting", "Employee Relations", "Onboarding", "HRIS", "Benefits Administration",
         "Performance Management", "Employment Law", "Payroll", "Workday", "Compensation"),
        ("Coaching", "Excel", "Compliance", "Public Speaking", "Scheduling"),
        ("Human Resources", "Psychology", "Business Administration", "Communications"),
        False,
        ("Peoplefirst Partners", "Sunward Retail", "Meridian Insurance", "Northstar Distribution"),
        ("hr generalist", "recruiter", "hr manager", "people partner"),
        ("support managers on hiring, performance and employee relations",
         "run onboarding and benefits enrolment",
         "keep HR data and policies accurate and compliant",
         "partner with leaders on workforce planning"),
        ("teaching", "healthcare_administration"), 0.3,
    ),
)

FAMILY_BY_NAME: dict[str, RoleFamily] = {f.name: f for f in FAMILIES}

#: Exact title (lower case) -> (family name, seniority).
TITLE_INDEX: dict[str, tuple[str, str]] = {
    t.lower(): (f.name, level) for f in FAMILIES for level, ts in f.titles.items() for t in ts
}


def normalise_title(title: str | None) -> str:
    return re.sub(r"\s+", " ", (title or "").strip().lower())


@lru_cache(maxsize=65_536)
def family_of_title(title: str | None) -> str | None:
    """The role family of a title: exact match first, then the family whose title words overlap most."""
    key = normalise_title(title)
    if not key:
        return None
    hit = TITLE_INDEX.get(key)
    if hit:
        return hit[0]
    words = set(re.findall(r"[a-z&]+", key)) - _TITLE_STOPWORDS
    best, best_n = None, 0
    for f in FAMILIES:
        n = len(words & _FAMILY_TITLE_WORDS[f.name])
        if n > best_n:
            best, best_n = f.name, n
    return best


_TITLE_STOPWORDS = {"senior", "junior", "lead", "staff", "of", "director", "manager", "chief",
                    "officer", "vp", "intern", "assistant", "the", "and", "head"}
_FAMILY_TITLE_WORDS: dict[str, set[str]] = {
    f.name: {w for ts in f.titles.values() for t in ts for w in re.findall(r"[a-z&]+", t.lower())} - _TITLE_STOPWORDS
    for f in FAMILIES
}


def families_related(a: str | None, b: str | None) -> bool:
    """True when two different families are adjacent (listed as related, either way round)."""
    if a is None or b is None or a == b:
        return False
    return b in FAMILY_BY_NAME[a].related or a in FAMILY_BY_NAME[b].related


# ---------------------------------------------------------------------------------------------
# Skills

#: Canonical skill -> surface forms members also write.
SKILL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "JavaScript": ("JS", "Javascript", "ECMAScript"),
    "TypeScript": ("TS",),
    "Kubernetes": ("K8s",),
    "PostgreSQL": ("Postgres",),
    "Machine Learning": ("ML",),
    "Deep Learning": ("DL", "Neural Networks"),
    "AWS": ("Amazon Web Services",),
    "CI/CD": ("Continuous Integration", "CI / CD"),
    "CRM": ("Customer Relationship Management",),
    "SEO": ("Search Engine Optimization", "Search Engine Optimisation"),
    "Excel": ("Microsoft Excel", "MS Excel"),
    "EHR": ("Electronic Health Records", "EMR", "Epic EHR"),
    "BLS": ("Basic Life Support",),
    "ACLS": ("Advanced Cardiac Life Support",),
    "GAAP": ("US GAAP",),
    "REST APIs": ("REST", "RESTful APIs"),
    "Scikit-learn": ("sklearn", "scikit learn"),
    "Go": ("Golang",),
    "NEC Code": ("National Electrical Code", "NEC"),
    "OSHA Safety": ("OSHA", "OSHA 30"),
    "HRIS": ("HR Information Systems",),
    "Power BI": ("PowerBI",),
    "A/B Testing": ("AB Testing", "Split Testing"),
    "ERP": ("Enterprise Resource Planning",),
    "Google Analytics": ("GA4",),
    "Paid Search": ("PPC", "SEM"),
}


def _skill_key(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w/+#&\s-]", "", text.strip().lower())).strip()


#: Normalised surface form -> canonical skill.
SKILL_CANONICAL: dict[str, str] = {}
for _f in FAMILIES:
    for _s in _f.core_skills + _f.adjacent_skills:
        SKILL_CANONICAL[_skill_key(_s)] = _s
for _canon, _forms in SKILL_SYNONYMS.items():
    SKILL_CANONICAL[_skill_key(_canon)] = _canon
    for _form in _forms:
        SKILL_CANONICAL[_skill_key(_form)] = _canon


@lru_cache(maxsize=65_536)
def canonical_skill(text: str | None) -> str | None:
    """The canonical name of a skill (synonyms and case folded); unknown skills keep their
    normalised form, blank ones give None."""
    if text is None:
        return None
    key = _skill_key(text)
    if not key:
        return None
    return SKILL_CANONICAL.get(key, key)


ALL_SKILLS: tuple[str, ...] = tuple(sorted({s for f in FAMILIES for s in f.core_skills + f.adjacent_skills}))
SKILL_INDEX: dict[str, int] = {s: i for i, s in enumerate(ALL_SKILLS)}

# ---------------------------------------------------------------------------------------------
# Education

#: Degree -> level (3 = bachelor or above, 2 = associate/diploma, 1 = certificate).
DEGREE_LEVEL: dict[str, int] = {
    "PhD": 4, "MSc": 4, "MBA": 4, "MA": 4, "MSN": 4, "MEd": 4,
    "BSc": 3, "BA": 3, "BSN": 3, "BBA": 3, "BEng": 3,
    "Associate Degree": 2, "Diploma": 2,
    "Certificate": 1, "Apprenticeship Certificate": 1,
}

SCHOOLS: tuple[str, ...] = (
    "State University", "Northbridge University", "Lakeview College", "Riverside Community College",
    "Westfield Institute of Technology", "Pacific Coast University", "Eastern Technical College",
    "University of Ashford", "Granite State College", "Metropolitan University",
)

# ---------------------------------------------------------------------------------------------
# Places


@dataclass(frozen=True)
class City:
    name: str
    metro: str
    country: str


CITIES: tuple[City, ...] = (
    City("New York, NY", "new_york", "US"), City("Jersey City, NJ", "new_york", "US"),
    City("Newark, NJ", "new_york", "US"), City("Boston, MA", "boston", "US"),
    City("Cambridge, MA", "boston", "US"), City("San Francisco, CA", "bay_area", "US"),
    City("Oakland, CA", "bay_area", "US"), City("San Jose, CA", "bay_area", "US"),
    City("Seattle, WA", "seattle", "US"), City("Bellevue, WA", "seattle", "US"),
    City("Chicago, IL", "chicago", "US"), City("Evanston, IL", "chicago", "US"),
    City("Austin, TX", "austin", "US"), City("Round Rock, TX", "austin", "US"),
    City("Dallas, TX", "dallas", "US"), City("Fort Worth, TX", "dallas", "US"),
    City("Atlanta, GA", "atlanta", "US"), City("Denver, CO", "denver", "US"),
    City("Boulder, CO", "denver", "US"), City("Phoenix, AZ", "phoenix", "US"),
    City("London, UK", "london", "UK"), City("Reading, UK", "london", "UK"),
    City("Manchester, UK", "manchester", "UK"), City("Toronto, ON", "toronto", "CA"),
    City("Mississauga, ON", "toronto", "CA"), City("Vancouver, BC", "vancouver", "CA"),
)
CITY_BY_NAME: dict[str, City] = {c.name.lower(): c for c in CITIES}
#: Relative population weights (bigger metros have more members and jobs).
CITY_WEIGHTS: tuple[float, ...] = (
    8, 2, 1.5, 4, 2, 5, 2, 2.5, 4, 1.5, 5, 1, 3, 1, 3.5, 1.5, 3.5, 3, 1, 2.5, 5, 1, 2, 4, 1.5, 2,
)


def city_of(location: str | None) -> City | None:
    """The known city a location string names, or None."""
    return CITY_BY_NAME.get((location or "").strip().lower())
