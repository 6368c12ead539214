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
