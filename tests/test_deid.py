"""DEID replacement: the label -> tag table, dates kept as text, MIMIC-IV blanks, counting."""

import random
import re
import pickle

import pytest

from clinical_t5x.data import deid

# Real MIMIC-III label spellings (several per family) -> expected replacement.
MIMIC3_CASES = [
    # names, initials, known names
    ("[**First Name8 (NamePattern2) **]", "[Name]"),
    ("[**First Name3 (LF) **]", "[Name]"),
    ("[**Last Name (NamePattern1) 1440**]", "[Name]"),
    ("[**Last Name (STitle) **]", "[Name]"),
    ("[**Last Name (un) **]", "[Name]"),
    ("[**Known lastname 1234**]", "[Name]"),
    ("[**Known firstname 99**]", "[Name]"),
    ("[**Name (NI) 123**]", "[Name]"),
    ("[**Name10 (NameIs) **]", "[Name]"),
    ("[**Name Initial (PRE) 12**]", "[Name]"),
    ("[**Initials (NamePattern4) **]", "[Name]"),
    ("[**Initial (NamePattern1) **]", "[Name]"),
    ("[**Name Prefix (Prefixes) **]", "[Name]"),
    ("[**Doctor First Name 55**]", "[Name]"),
    ("[**Doctor Last Name (ambig) **]", "[Name]"),
    ("[**Female First Name (un) **]", "[Name]"),
    ("[**Male First Name (un) **]", "[Name]"),
    ("[**FirstName 123**]", "[Name]"),
    # hospital, company, college
    ("[**Hospital1 18**]", "[Company]"),
    ("[**Hospital 1234**]", "[Company]"),
    ("[**Hospital3 4**]", "[Company]"),
    ("[**Company 9**]", "[Company]"),
    ("[**University/College **]", "[Company]"),
    # record, MD, clip, job, unit numbers, numeric identifiers
    ("[**Medical Record Number 123**]", "[Reg#]"),
    ("[**MD Number(1) 1776**]", "[Reg#]"),
    ("[**MD Number(3) 42**]", "[Reg#]"),
    ("[**Clip Number (Radiology) 10574**]", "[Reg#]"),
    ("[**Job Number 4423**]", "[Reg#]"),
    ("[**Unit Number 77**]", "[Reg#]"),
    ("[**Numeric Identifier 5326**]", "[Reg#]"),
    # locations, addresses, ward names, PO boxes
    ("[**Location (un) 436**]", "[LOC]"),
    ("[**Location 1234**]", "[LOC]"),
    ("[**Location (Universities) 12**]", "[LOC]"),
    ("[**Street Address(1) 5**]", "[LOC]"),
    ("[**Street Address(2) 5**]", "[LOC]"),
    ("[**Apartment Address(1) 6**]", "[LOC]"),
    ("[**Hospital Ward Name 121**]", "[LOC]"),
    ("[**Hospital Unit Name 153**]", "[LOC]"),
    ("[**PO BOX **]", "[LOC]"),
    ("[**State/Zipcode **]", "[LOC]"),
    # phone, pager, serial, SSN, provider numbers
    ("[**Telephone/Fax (1) 3231**]", "[#]"),
    ("[**Telephone/Fax (5) 1**]", "[#]"),
    ("[**Pager number 8**]", "[#]"),
    ("[**Serial Number 3**]", "[#]"),
    ("[**Social Security Number 10**]", "[#]"),
    ("[**Provider Number 11**]", "[#]"),
    # contact info
    ("[**E-mail address 12**]", "[CI]"),
    ("[**CC Contact Info 13**]", "[CI]"),
    ("[**Attending Info 14**]", "[CI]"),
    ("[**Dictator Info 15**]", "[CI]"),
    # the rest
    ("[**Age over 90 **]", "[Age]"),
    ("[**Age over 90 16**]", "[Age]"),
    ("[**Date range (1) 105469**]", "[DR]"),
    ("[**Date Range **]", "[DR]"),
    ("[**State 17**]", "[State]"),
    ("[**Country 18**]", "[Country]"),
    ("[**URL 19**]", "[URL]"),
    ("[**Year (4 digits) **]", "[YR]"),
    ("[**Year (2 digits) 20**]", "[YR]"),
    ("[**Month (only) 547**]", "[MO]"),
    ("[**Month/Year (2) 21**]", "[MO]"),
    ("[**Holiday 22**]", "[DAY]"),
    ("[**Month/Day (3) 23**]", "[DAY]"),
    ("[**Month/Day/Year **]", "[DAY]"),
    # dates written as dates stay as text, without the brackets
    ("[**2151-8-5**]", "2151-8-5"),
    ("[**4-1**]", "4-1"),
    ("[**8/2146**]", "8/2146"),
    ("[**3/1/2150**]", "3/1/2150"),
    ("[**2-/2186**]", "2-/2186"),
    ("[**2150**]", "2150"),
    ("[**January 3**]", "January 3"),
    ("[**Jan 3, 2150**]", "Jan 3, 2150"),
    ("[**December**]", "December"),
    ("[**2151-8-5 12:30**]", "2151-8-5 12:30"),
    # the empty placeholder becomes nothing
    ("[** **]", ""),
    ("[****]", ""),
]


@pytest.mark.parametrize("placeholder,expected", MIMIC3_CASES)
def test_every_label_family_maps_as_documented(placeholder, expected):
    assert deid.replace_mimic3(placeholder) == expected


@pytest.mark.parametrize("placeholder,expected", MIMIC3_CASES)
def test_surrounding_text_is_kept_exactly(placeholder, expected):
    text = f"a  {placeholder}\n,b\t{placeholder}."
    assert deid.replace_mimic3(text) == f"a  {expected}\n,b\t{expected}."


def test_every_tag_is_reachable_from_a_label():
    produced = {expected for _, expected in MIMIC3_CASES}
    assert set(deid.TAGS) - produced == {"[MISC]"}


def test_labels_match_whole_label_not_substrings():
    # "Hospital Ward Name" contains "Hospital" and "Name"; "Year (4 digits)" contains digits.
    assert deid.replace_mimic3("[**Hospital Ward Name 1**]") == "[LOC]"
    assert deid.replace_mimic3("[**Year (4 digits) **]") == "[YR]"
    assert deid.replace_mimic3("[**Last Name Hospital 2**]") == "[MISC]"


def test_unknown_label_becomes_misc_and_is_counted_by_label():
    counts = deid.DeidCounts()
    text = "x [**Doctor Number 12**] y [**Doctor Number 99**] z [**Known lastname 1**]"
    assert deid.replace_mimic3(text, counts) == "x [MISC] y [MISC] z [Name]"
    assert counts.unknown_labels == {"Doctor Number": 2}
    assert counts.tags["[MISC]"] == 2 and counts.tags["[Name]"] == 1


@pytest.mark.parametrize("text,expected", [
    ("[**", "[**"), ("**]", "**]"), ("[** no end", "[** no end"),
    ("[**Known\nlastname 1**]", "[**Known\nlastname 1**]"),  # placeholders never span lines
    ("[**" + "x" * 500 + "**]", "[**" + "x" * 500 + "**]"),  # nor run on for hundreds of chars
    ("[*Known lastname 1*]", "[*Known lastname 1*]"),
    ("\x00[**\u00e9\u00e8 5**]", "\x00[MISC]"),
    ("[**[**Known lastname 1**]**]", "[Name]**]"),
])
def test_odd_input_never_raises(text, expected):
    assert deid.replace_mimic3(text, deid.DeidCounts()) == expected


def test_text_without_placeholders_is_returned_unchanged():
    text = "No placeholders here,  just   text.\n"
    assert deid.replace_mimic3(text) is text
    assert deid.replace_mimic4(text, typed=True) is text


def test_counts_dates_empty_merge_pickle_and_dict():
    a, b = deid.DeidCounts(), deid.DeidCounts()
    deid.replace_mimic3("[**2151-8-5**] [** **] [**Hospital1 1**] [**Numeric Code 1**]", a)
    deid.replace_mimic3("[**4-1**] [**Hospital1 2**]", b)
    merged = pickle.loads(pickle.dumps(a)).merge(b)
    as_dict = merged.as_dict()
    assert list(as_dict["tags"]) == list(deid.TAGS)
    assert as_dict["tags"]["[Company]"] == 2 and as_dict["tags"]["[MISC]"] == 1
    assert as_dict["unknown_labels"] == {"Numeric Code": 1}
    assert as_dict["dates_as_text"] == 2 and as_dict["empty"] == 1


def test_replace_list_of_notes_as_in_the_clinical_t5_release():
    assert deid.replace_list_of_notes(["My name is [**FirstName 123**]"]) == ["My name is [Name]"]
    mimic4 = deid.replace_list_of_notes(["Name:  ___ seen"], note_type="mimic-iv")
    assert mimic4 == ["Name:  [MISC] seen"]
    with pytest.raises(ValueError, match="note_type"):
        deid.replace_list_of_notes(["x"], note_type="mimic-v")


def test_mimic4_blanks_default_to_misc_and_leave_form_lines():
    counts = deid.DeidCounts()
    text = "___ Name:  ___  Unit No: ___\n______________\n____ _____ ______ a___b\n___"
    expected = "[MISC] Name:  [MISC]  Unit No: [MISC]\n______________\n____ _____ ______ a[MISC]b\n[MISC]"
    assert deid.replace_mimic4(text, counts=counts) == expected
    assert counts.tags["[MISC]"] == 5


@pytest.mark.parametrize("context,tag", [
    ("Name:  ", "[Name]"), ("Dr. ", "[Name]"), ("(Dr.", "[Name]"), ("Mrs. ", "[Name]"),
    ("Attending: ", "[Name]"), ("Completed by:\n", "[Name]"), ("Patient Name: ", "[Name]"),
    ("Unit No:   ", "[Reg#]"), ("MRN: ", "[Reg#]"), ("Job#: ", "[Reg#]"),
    ("Admission Date:  ", "[DAY]"), ("Discharge Date:   ", "[DAY]"), ("Date of Birth:  ", "[DAY]"),
    ("DOB: ", "[DAY]"), ("Phone: ", "[#]"), ("Pager # ", "[#]"), ("Fax: ", "[#]"),
    ("Facility:\n", "[Company]"), ("E-mail: ", "[CI]"),
    ("a ", "[MISC]"), ("transferred to ", "[MISC]"), ("COMPARISON:  ", "[MISC]"), ("", "[MISC]"),
    ("Name:  ___ ", "[MISC]"),
])
def test_typed_mimic4_blanks_follow_their_left_context(context, tag):
    text = f"x\n{context}___ year old"
    expected = f"x\n{context.replace('___', '[Name]')}{tag} year old"
    assert deid.replace_mimic4(text, typed=True) == expected


def test_typed_mimic4_counts_each_tag():
    counts = deid.DeidCounts()
    deid.replace_mimic4("Name:  ___  Unit No:   ___\nDr. ___ saw ___", typed=True, counts=counts)
    assert counts.tags == {"[Name]": 2, "[Reg#]": 1, "[MISC]": 1}


def test_unknown_labels_never_record_note_shaped_text():
    counts = deid.DeidCounts()
    text = ("a [**Unmapped Field 12**] b [**pt said she fell at home on the stairs**] c [**x\x00y**]"
            " d [**Mary Jones**] e [**Location Code 7**]")
    assert deid.replace_mimic3(text, counts) == "a [MISC] b [MISC] c [MISC] d [MISC] e [MISC]"
    assert counts.unknown_labels == {"(unreadable label)": 4, "Location Code": 1}


_NOTE_WORDS = ("Mary", "Jones", "pt", "said", "she", "fell", "at", "home", "on", "stairs", "BP",
               "140/90", "Smith", "Boston", "MA", "02115", "seen", "by", "Dr", "Lee", "x2", "c/o",
               "SOB", "denies", "CP", "follow", "up", "in", "clinic", "3/4", "555-1234", "Rx")


def test_unknown_labels_record_only_mimic_label_words_whatever_the_text():
    """Property over many generated placeholders: note-shaped words (names, places, phone
    numbers, prose), alone or mixed with MIMIC label words, are never recorded; what is
    recorded consists of MIMIC label words and short numbers only."""
    rng = random.Random(0)
    label_words = sorted(deid._LABEL_WORDS)
    assert not {w.lower() for w in _NOTE_WORDS} & deid._LABEL_WORDS
    recorded_clean = 0
    for _ in range(3000):
        words = [rng.choice(label_words).title() for _ in range(rng.randint(1, 4))]
        note_words = [rng.choice(_NOTE_WORDS) for _ in range(rng.randint(0, 3))]
        for word in note_words:
            words.insert(rng.randint(0, len(words)), word)
        inner = " ".join(words) + rng.choice(["", " 12", f" {rng.randint(100, 99999)}"])
        counts = deid.DeidCounts()
        deid.replace_mimic3(f"text [**{inner}**] text", counts)
        for label in counts.unknown_labels:
            if label == "(unreadable label)":
                continue
            assert not set(label.split()) & set(note_words), (inner, label)
            assert {w.lower() for w in re.findall("[A-Za-z]+", label)} <= deid._LABEL_WORDS
            assert all(len(n) <= 2 for n in re.findall(r"\d+", label))
            assert not re.search(r"\d[-/.:]\d", label)
            recorded_clean += 1
    assert recorded_clean > 100  # the property is not vacuous: clean labels are recorded


def test_classification_does_not_depend_on_what_was_seen_before():
    """The label cache is per process: a worker's output must not depend on its earlier notes."""
    for text in ("[**March 3**] [**March 123456**]", "[**March 123456**] [**March 3**]"):
        deid._cache.clear()
        assert sorted(deid.replace_mimic3(text).split(" ")) == ["3", "March", "[MISC]"]


def test_mask_makes_every_deidentification_of_a_note_alike():
    mimic3 = "Dr. [**Last Name (NamePattern1) 12**] at [**Hospital1 18**], [** **]."
    mimic4 = "Dr. ___ at ___, ___."
    prepared = deid.replace_mimic3("Dr. [**Last Name (NamePattern1) 12**] at [**Hospital1 18**], [**Age over 90 **].")
    assert deid.mask(mimic3, "#") == deid.mask(mimic4, "#") == deid.mask(prepared, "#") == "Dr. # at #, #."
    assert deid.mask("a ____ line and [Unknown]", "#") == "a ____ line and [Unknown]"
