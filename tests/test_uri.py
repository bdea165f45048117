import pytest

from coercion import Option, URIError, parse_uri

ALL_SUPPORTED = [o for o in Option if o != Option.CleanRecognizableVisualFeaturesOption]


def test_empty_uri_is_the_basic_profile():
    assert parse_uri("deidentify:").options == frozenset()


@pytest.mark.parametrize("option", ALL_SUPPORTED)
def test_every_dcm4chee_option_name_is_accepted(option):
    assert option in parse_uri(f"deidentify:{option.value}")


def test_options_round_trip_in_canonical_order():
    uri = parse_uri("deidentify:RetainUIDsOption , RetainSafePrivateOption")
    assert str(uri) == "deidentify:RetainSafePrivateOption,RetainUIDsOption"
    assert parse_uri(str(uri)) == uri


@pytest.mark.parametrize(
    "uri, message",
    [
        ("deidentify:RetainUIDs", "unknown option 'RetainUIDs'"),
        ("deidentify:RetainUIDsOption,RetainUIDsOption", "more than once"),
        ("deidentify:RetainUIDsOption,,CleanGraphicsOption", "empty option at position 2"),
        ("anonymize:RetainUIDsOption", "expected 'deidentify:'"),
        ("RetainUIDsOption", "expected 'deidentify:'"),
        ("deidentify:retainuidsoption", "unknown option"),
        (
            "deidentify:RetainLongitudinalTemporalInformationFullDatesOption,"
            "RetainLongitudinalTemporalInformationModifiedDatesOption",
            "cannot be used together",
        ),
        ("deidentify:CleanRecognizableVisualFeaturesOption",
         "CleanRecognizableVisualFeaturesOption is not supported: recognizable faces .* need a tool of their own"),
    ],
)
def test_bad_uris_are_refused_with_the_problem_named(uri, message):
    with pytest.raises(URIError, match=message):
        parse_uri(uri)
