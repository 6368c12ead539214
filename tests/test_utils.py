"""Utilities the notebooks use to show the package."""


def test_show_source_reads_the_package_and_says_where():
    from cifar import model
    from cifar.utils import show_source

    listing = show_source(model.ResidualBlock)
    assert listing.path == "cifar/model.py"
    lines = open(model.__file__).read().splitlines()
    assert lines[listing.first - 1].startswith("class ResidualBlock")
    assert listing.code == "\n".join(lines[listing.first - 1 : listing.last])
    assert "```python\nclass ResidualBlock" in listing._repr_markdown_()
    assert repr(listing).startswith(f"# cifar/model.py, lines {listing.first}-")


def test_a_shown_command_names_no_data_folder_of_the_machine():
    from cifar.utils import shown_command

    assert shown_command("python -m cifar.train --data-dir ../shared/data/cifar10") == (
        "python -m cifar.train --data-dir <data>/cifar10"
    )
    assert shown_command("python -m cifar.s10 --data-dir=/x/y/cifar10 --out runs/s10") == (
        "python -m cifar.s10 --data-dir=<data>/cifar10 --out runs/s10"
    )
    assert shown_command("python -m cifar.s10 --range-test r.json") == "python -m cifar.s10 --range-test r.json"
    assert shown_command(None) is None
