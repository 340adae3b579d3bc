import pytest

from worker.errors import InvalidInput, InvalidServerName
from worker.names import MAX_SERVER_NAME_LENGTH, clean_server_name, clean_user, name_key, user_key


@pytest.mark.parametrize(
    "raw", ["Unassigned", "unassigned", "REASSIGNED", "  Reassigned  ", "rEaSsIgNeD"]
)
def test_reserved_names_are_refused_in_any_case(raw):
    with pytest.raises(InvalidServerName, match="reserved by Apple"):
        clean_server_name(raw)


@pytest.mark.parametrize("raw", ["", "   ", "\t\n"])
def test_empty_names_are_refused(raw):
    with pytest.raises(InvalidServerName, match="empty"):
        clean_server_name(raw)


def test_absurdly_long_names_are_refused_and_the_limit_is_named():
    with pytest.raises(InvalidServerName, match=str(MAX_SERVER_NAME_LENGTH)):
        clean_server_name("x" * (MAX_SERVER_NAME_LENGTH + 1))
    assert clean_server_name("x" * MAX_SERVER_NAME_LENGTH) == "x" * MAX_SERVER_NAME_LENGTH


def test_names_with_control_characters_are_refused():
    with pytest.raises(InvalidServerName, match="control characters"):
        clean_server_name("Room\x00101")


def test_surrounding_spaces_are_trimmed_and_spelling_is_kept():
    assert clean_server_name("  Raum Ü1 Naturwissenschaft  ") == "Raum Ü1 Naturwissenschaft"


def test_names_compare_ignoring_case_and_unicode_form():
    assert name_key("Straße") == name_key("STRASSE")
    assert name_key("Caf\u00e9") == name_key("Cafe\u0301")
    assert name_key(" Main ") == name_key("main")


def test_users_compare_case_insensitively_and_must_not_be_empty():
    assert user_key("Admin@School.EDU") == user_key("admin@school.edu")
    with pytest.raises(InvalidInput, match="user is empty"):
        clean_user("  ")


def test_full_width_reserved_names_are_refused_too():
    with pytest.raises(InvalidServerName, match="reserved by Apple"):
        clean_server_name("\uff35\uff2e\uff21\uff33\uff33\uff29\uff27\uff2e\uff25\uff24")
