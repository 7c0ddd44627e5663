package apmrs.engine;

import java.util.Set;
import java.util.function.UnaryOperator;

import org.opensearch.client.node.NodeClient;
import org.opensearch.common.util.concurrent.ThreadContext;
import org.opensearch.plugins.ActionPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.rest.RestChannel;
import org.opensearch.rest.RestHandler;
import org.opensearch.rest.RestRequest;

/**
 * Makes OpenSearch accept the Elasticsearch-only bulk URL parameters that
 * apm-rs sends like apm-server does: `require_data_stream` (ES 7.13+) and
 * `include_source_on_error` (ES 8.18+). OpenSearch rejects unknown
 * parameters with 400; this wrapper marks them consumed before the real
 * handler runs. Neither changes what OpenSearch does: apm-rs writes only to
 * data streams created from the test's index templates, and our
 * `filter_path` drops sources from error items anyway. The test
 * `bulk_url_parameters` checks that the parameters reach the engine and
 * that OpenSearch still rejects a misspelled one.
 */
public final class CompatPlugin extends Plugin implements ActionPlugin {
    static final Set<String> ES_ONLY_PARAMS = Set.of("require_data_stream", "include_source_on_error");

    @Override
    public UnaryOperator<RestHandler> getRestHandlerWrapper(final ThreadContext threadContext) {
        return handler -> new RestHandler.Wrapper(handler) {
            @Override
            public void handleRequest(final RestRequest request, final RestChannel channel, final NodeClient client)
                    throws Exception {
                if (request.path().endsWith("/_bulk")) {
                    for (final String p : ES_ONLY_PARAMS) {
                        request.param(p);
                    }
                }
                super.handleRequest(request, channel, client);
            }
        };
    }
}
