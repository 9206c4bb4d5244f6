"""Tests a user reads off a docstring: doctest examples, else example lines in the usual notations."""

import pytest

from cope_dspy import CopeInputError
from cope_dspy.sandbox import run_tests
from cope_dspy.user_tests import docstring_tests, doctest_tests, example_tests

LINES = '''def search(lst, k=0):
    """Return the greatest integer whose frequency is at least its value, else -1.
    Examples:
        search([4, 1, 2, 2, 3, 1]) == 2
        * search([5, 5, 4, 4, 4]) ➞ -1
        for search([1]) => 1.
        search([3, 3, 3], k=1) ==> 3
        search([2, 2]) should return 2
        search([6]) returns -1 # six is too large
        search([3, 3, 3])   # => 3
        search([2, 2, 2]) = 2
        search([]) -> -1, since nothing qualifies
        search(lst) == the answer
        search([1, 1]) == 1 + 0 = 1
        searching([1]) == 1
    """
'''
GOOD = """def search(lst, k=0):
    best = -1
    for x in set(lst):
        if lst.count(x) >= x > 0:
            best = max(best, x)
    return best
"""


def test_example_lines_in_every_notation_become_asserts_and_prose_is_skipped():
    tests = example_tests(LINES, "search")
    assert tests == [
        "assert search([4, 1, 2, 2, 3, 1]) == 2",
        "assert search([5, 5, 4, 4, 4]) == -1",
        "assert search([1]) == 1",
        "assert search([3, 3, 3], k=1) == 3",
        "assert search([2, 2]) == 2",
        "assert search([6]) == -1",  # a trailing comment dropped
        "assert search([3, 3, 3]) == 3",
        "assert search([2, 2, 2]) == 2",
        "assert search([1, 1]) == 1",  # a worked value counts as its last part
    ]  # skipped: a value that is prose, an argument that is a name, another function's call
    assert run_tests(GOOD, tests).passed
    wrong = run_tests(GOOD.replace("best = -1", "best = 0"), tests)
    assert not wrong.passed and wrong.n_passed == 7  # only the two -1 examples catch it

def test_for_x_the_output_should_be_names_parameters():
    one = 'def hex_key(num):\n    """Count primes.\n    For num = "AB" the output should be 1.\n    """\n'
    assert example_tests(one, "hex_key") == ["assert hex_key(num='AB') == 1"]
    two = '''def reverse_delete(s, c):
    """
    For s = "abcde", c = "ae", the result should be ('bcd',False)
    For N = 1000, the sum of digits will be 1 the output should be "1".
    For t = "x", the result should be ('x', True)
    """'''
    # prose in the arguments, or a name that is no parameter: skipped
    assert example_tests(two, "reverse_delete") == ["assert reverse_delete(s='abcde', c='ae') == ('bcd', False)"]


def test_input_output_blocks_become_calls_by_name_or_by_value():
    stub = '''def maximum(arr, k):
    """
    Example 1:
        Input: arr = [-3, -4, 5], k = 3
        Output: [-4, -3, 5]
    Example 2:
        Input:
            arr : [4, -4, 4]
            k : 2
        Output: [4, 4]  # the two largest
    Example 3:
        Input: grid = [[1]], k = 1
        Output: [1]
    """

def pluck(arr):
    """
    Input: [4,2,3]
    Output: [2, 1]
        Explanation: 2 is the smallest even value.
    Input: [1, 2], [3]
    Output: [2, 0]
    """'''
    assert example_tests(stub, "maximum") == [
        "assert maximum(arr=[-3, -4, 5], k=3) == [-4, -3, 5]",
        "assert maximum(arr=[4, -4, 4], k=2) == [4, 4]",
    ]  # "grid" is no parameter of maximum
    assert example_tests(stub, "pluck") == ["assert pluck([4, 2, 3]) == [2, 1]"]  # two values for one parameter


def test_true_and_false_words_and_a_stub_without_a_body():
    stub = 'def is_simple_power(x, n):\n    """\n    is_simple_power(1, 4) => true\n    is_simple_power(3, 2) => false\n    """'
    assert example_tests(stub, "is_simple_power") == [
        "assert is_simple_power(1, 4) == True",
        "assert is_simple_power(3, 2) == False",
    ]


def test_docstring_tests_prefers_doctests_and_falls_back_to_example_lines():
    both = 'def add(a, b):\n    """\n    >>> add(1, 2)\n    3\n    add(2, 2) == 4\n    """\n'
    tests = docstring_tests(both, "add")
    assert tests == doctest_tests(both, "add") and len(tests) == 1
    assert docstring_tests(LINES, "search") == example_tests(LINES, "search")
    assert docstring_tests('def f(x):\n    """Double x."""\n', "f") == []
    assert docstring_tests(LINES, "other") == []  # only the named function's docstring


def test_source_that_is_not_python_is_refused_by_name():
    with pytest.raises(CopeInputError, match="docstring tests need Python source"):
        example_tests("this is not ( python", "f")
