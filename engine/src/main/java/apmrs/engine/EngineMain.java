package apmrs.engine;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;

import org.codelibs.opensearch.runner.OpenSearchRunner;

/**
 * Starts one OpenSearch node on 127.0.0.1 for apm-rs's tests and keeps it
 * running until the JVM is stopped (SIGTERM from .ci/engine.sh stop).
 *
 * Usage: EngineMain <http-port> <base-dir>
 *
 * The write thread pool is one thread with a queue of 8, so a modest load
 * makes the node answer bulk items with real 429 (es_rejected_execution)
 * responses, which the back-pressure test needs. Security is not part of
 * the runner's module set, so the node accepts requests without auth.
 */
public final class EngineMain {
    private EngineMain() {
    }

    public static void main(final String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: EngineMain <http-port> <base-dir>");
            System.exit(2);
        }
        final int port = Integer.parseInt(args[0]);
        final Path base = Paths.get(args[1]).toAbsolutePath();
        deleteTree(base);
        final OpenSearchRunner runner = new OpenSearchRunner();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (final IOException e) {
                System.err.println("closing the node: " + e);
            }
        }));
        // http.port is set below; skip the runner's own port probing (it stops at 9299).
        runner.setMaxHttpPort(-1);
        runner.onBuild((number, settings) -> {
            settings.put("network.host", "127.0.0.1");
            settings.put("http.port", String.valueOf(port));
            settings.put("transport.port", String.valueOf(port + 100));
            settings.put("discovery.type", "single-node");
            // The runner defaults to master+data; the ingest pipelines need ingest.
            settings.putList("node.roles", "cluster_manager", "data", "ingest");
            settings.put("thread_pool.write.size", 1);
            settings.put("thread_pool.write.queue_size", 8);
            // Tests fill the disk of a shared machine a little; never go read-only.
            settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
            settings.put("action.auto_create_index", true);
            settings.put("http.max_content_length", "100mb");
        });
        runner.build(OpenSearchRunner.newConfigs()
                .basePath(base.toString())
                .numOfNode(1)
                .baseHttpPort(port - 1)
                .clusterName("apm-rs-test-engine")
                .pluginTypes(CompatPlugin.class.getName()));
        runner.ensureYellow();
        System.out.println("ENGINE READY http://127.0.0.1:" + port);
        System.out.flush();
        while (!runner.isClosed()) {
            Thread.sleep(1000);
        }
    }

    private static void deleteTree(final Path p) throws IOException {
        if (!Files.exists(p)) {
            return;
        }
        try (var walk = Files.walk(p)) {
            walk.sorted(java.util.Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        }
    }
}
