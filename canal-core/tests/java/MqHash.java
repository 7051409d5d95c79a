// Prints the hashes and partitions Java Canal's MQ producers compute (MQMessageUtils.messagePartition)
// for the sample strings and rows that canal-core's mq tests use. See README.md here.
import java.util.ArrayList;
import java.util.List;

public class MqHash {
    // Keep in the same order as SAMPLES in canal-core/src/mq/tests.rs.
    static final String[] SAMPLES = {
        "", "a", "id", "test", "1", "12345", "-1", "2026-12-05 12:00:00",
        "\u4e2d\u6587", "\ud83d\ude00", "caf\u00e9", "polygenelubricants", "GydZG_",
        "DESIGNING WORKHOUSES", "a\u0000b", "The quick brown fox jumps over the lazy dog",
        "\u00ff\u0100\uffff", "orders", "order_item", "mytest"
    };
    static final int[] COUNTS = { 1, 2, 3, 7, 16, 1024, 2147483647 };

    // Canal: int pkHash = Math.abs(hashCode) % partitionsNum; pkHash = Math.abs(pkHash);
    static int partition(int hashCode, int partitionsNum) {
        int pkHash = Math.abs(hashCode) % partitionsNum;
        return Math.abs(pkHash);
    }

    static String parts(int h) {
        StringBuilder sb = new StringBuilder();
        for (int n : COUNTS) {
            if (sb.length() > 0) sb.append(' ');
            sb.append(partition(h, n));
        }
        return sb.toString();
    }

    public static void main(String[] args) {
        // One line per sample: index, String.hashCode, partitions for COUNTS.
        for (int i = 0; i < SAMPLES.length; i++) {
            int h = SAMPLES[i].hashCode();
            System.out.println("str " + i + " " + h + " " + parts(h));
        }
        // Rows: database = SAMPLES[d], key values = SAMPLES[a] (and SAMPLES[b]); with and without
        // canal.mq.database.hash: hashCode = database.hashCode() (or 0), then ^= value.hashCode().
        int[][] rows = { { 3, 4 }, { 3, 5 }, { 19, 4, 2 }, { 19, 8, 9 }, { 17, 11 }, { 0, 0 },
                         { 3, 12, 13 }, { 19, 6, 7 }, { 18, 15, 1 } };
        for (int[] r : rows) {
            for (int dbHash = 1; dbHash >= 0; dbHash--) {
                int hashCode = 0;
                if (dbHash == 1) hashCode = SAMPLES[r[0]].hashCode();
                StringBuilder idx = new StringBuilder().append(r[0]);
                for (int k = 1; k < r.length; k++) {
                    hashCode = hashCode ^ SAMPLES[r[k]].hashCode();
                    idx.append(',').append(r[k]);
                }
                System.out.println("row " + idx + " " + dbHash + " " + hashCode + " " + parts(hashCode));
            }
        }
    }
}
