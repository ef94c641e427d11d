"""Pages the app serves to people: the API docs, with every asset served by the app itself."""
